/**
 * What llama.cpp's and vLLM's clients read of the server beside the OpenAI routes: `/tokenize` with vLLM's
 * `token_strs` and llama.cpp's pieces (and its `content`), `/detokenize`'s `content`, `GET /v1/health`; and the vLLM
 * fields that change a prompt or a reply's text: chat `echo`, `skip_special_tokens: false`, `truncate_prompt_tokens`
 * and `add_special_tokens`, each against the same request run on the ids it should amount to. The model is the
 * converted stories260K (a SentencePiece vocabulary with byte fallback), greedy.
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeModule, storiesConfig, storiesModule } from './support/modules.js';
import { bpeTokenizerFiles } from './support/bpe-vocab.js';
import { postJson, useServers } from './support/servers.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';

const GREEDY = { model: 'st', temperature: 0 };
const PROMPT = 'Once upon a time';

type Completion = { choices: { text: string }[]; usage: { prompt_tokens: number } };
type Chat = { choices: { message: { content: string } }[]; usage: { prompt_tokens: number } };
type Tokenized = { count: number; tokens: number[] };

describe('reasonplug serve: llama.cpp and vLLM token routes and prompt fields', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let url: string;
  /** The stories vocabulary: each id's spelling in tokenizer.json. */
  let spelling: Map<number, string>;
  const json = async (path: string, body: unknown) => {
    const res = await postJson(url, path, body);
    expect(res.status, await res.clone().text()).to.equal(200);
    return res.json();
  };
  const ids = async (body: Record<string, unknown>) => ((await json('/tokenize', { model: 'st', ...body })) as Tokenized).tokens;
  const complete = (body: Record<string, unknown>) => json('/v1/completions', { ...GREEDY, max_tokens: 8, ...body }) as Promise<Completion>;
  const chat = (body: Record<string, unknown>) => json('/v1/chat/completions', { ...GREEDY, max_tokens: 6, ...body }) as Promise<Chat>;
  /** The content deltas of a streamed chat, in order. */
  const streamedContent = async (body: Record<string, unknown>) => {
    const res = await postJson(url, '/v1/chat/completions', { ...GREEDY, max_tokens: 6, ...body, stream: true });
    return (await res.text())
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => (JSON.parse(e.slice(6)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content)
      .filter((c): c is string => c !== undefined && c !== '');
  };

  before(async () => {
    const dir = await storiesModule();
    const vocab = (JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab;
    spelling = new Map(Object.entries(vocab).map(([s, id]) => [id, s]));
    url = await serve({ engine: { model: dir }, name: 'st', chatTemplate: TOOLS_TEMPLATE });
  });

  it("/tokenize gives vLLM's token_strs (the vocabulary's spellings) and llama.cpp's pieces (bytes where not UTF-8), and takes llama.cpp's content", async () => {
    const plain = await ids({ prompt: 'Once upon á' });
    const res = (await json('/tokenize', { model: 'st', prompt: 'Once upon á', return_token_strs: true, with_pieces: true })) as { count: number; tokens: { id: number; piece: unknown }[]; token_strs: string[] };
    expect(res.tokens.map((t) => t.id)).to.deep.equal(plain);
    expect(res.count).to.equal(plain.length);
    expect(res.token_strs).to.deep.equal(plain.map((id) => spelling.get(id)));
    expect(res.token_strs).to.include.members(['<s>', '▁Once', '▁upon', '<0xC3>', '<0xA1>']);
    // The pieces are the tokens' text: BOS's own, a word's with its space, a byte of 'á' (C3 A1) as a list of one number.
    const known: Record<number, unknown> = { 1: '<s>', 403: ' Once', 407: ' upon', 198: [0xc3], 164: [0xa1] };
    expect(res.tokens.map((t) => t.piece)).to.deep.equal(plain.map((id) => known[id] ?? spelling.get(id)!.replaceAll('▁', ' ')));
    // llama.cpp's request shape: the text as `content`, BOS only with add_special.
    expect(await ids({ content: 'Once upon' })).to.deep.equal(await ids({ prompt: 'Once upon', add_special_tokens: false }));
    expect(await ids({ content: 'Once upon', add_special: true })).to.deep.equal(await ids({ prompt: 'Once upon' }));
    const withPieces = (await json('/tokenize', { content: 'Once upon', with_pieces: true })) as { tokens: unknown[] };
    expect(withPieces.tokens).to.deep.equal([{ id: 403, piece: ' Once' }, { id: 407, piece: ' upon' }]);
    expect(await (await postJson(url, '/tokenize', { prompt: 'x', with_pieces: 'yes' })).json()).to.have.nested.property('error.param', 'with_pieces');
  });

  it('/tokenize spells a byte-level vocabulary\'s tokens as it does (Ġ for a space, a special token as written), pieces a character\'s parts as bytes', async () => {
    const { tokenizerJson, tokenizerConfig } = bpeTokenizerFiles();
    const tj = tokenizerJson as unknown as { model: { vocab: Record<string, number> }; added_tokens: { id: number; content: string }[] };
    const spelt = new Map([...Object.entries(tj.model.vocab).map(([s, id]): [number, string] => [id, s]), ...tj.added_tokens.map((t): [number, string] => [t.id, t.content])]);
    const module = await makeModule({ name: 'byte-level-tokroutes', kind: 'backbone', config: storiesConfig({ vocabSize: Math.max(...spelt.keys()) + 1 }), tokenizerFiles: { tokenizerJson, tokenizerConfig } });
    const at = await serve({ engine: { model: module }, name: 'bl' });
    const text = 'Hello wörld ☃<|im_end|>';
    const res = await postJson(at, '/tokenize', { prompt: text, add_special_tokens: false, return_token_strs: true, with_pieces: true });
    const { tokens, token_strs } = (await res.json()) as { tokens: { id: number; piece: string | number[] }[]; token_strs: string[] };
    expect(token_strs).to.deep.equal(tokens.map((t) => spelt.get(t.id)));
    expect(token_strs).to.include.members(['Ġw', '<|im_end|>']);
    // Each piece is text where its bytes are UTF-8, else the bytes; together they are the text's bytes.
    const bytes = tokens.flatMap((t) => (typeof t.piece === 'string' ? [...Buffer.from(t.piece)] : t.piece));
    expect(Buffer.from(bytes).toString()).to.equal(text);
    expect(tokens.some((t) => Array.isArray(t.piece)), JSON.stringify(tokens)).to.equal(true);
  });

  it('a message given as text parts is one text, the parts a line apart (as vLLM and llama.cpp join them), on chat and responses', async () => {
    const parts = [{ type: 'text', text: 'Summarize this:' }, { type: 'text', text: 'The cat sat.' }];
    const joined = await ids({ messages: [{ role: 'user', content: 'Summarize this:\nThe cat sat.' }] });
    expect(await ids({ messages: [{ role: 'user', content: parts }] })).to.deep.equal(joined);
    const responses = (await json('/v1/responses', { ...GREEDY, max_output_tokens: 1, input: [{ role: 'user', content: parts.map((p) => ({ ...p, type: 'input_text' })) }] })) as { usage: { input_tokens: number } };
    expect(responses.usage.input_tokens).to.equal(joined.length);
  });

  it("/detokenize gives llama.cpp's content beside vLLM's prompt; GET /v1/health answers as /health", async () => {
    expect(await json('/detokenize', { tokens: [1, 403, 407] })).to.deep.equal({ prompt: '<s> Once upon', content: '<s> Once upon' });
    for (const path of ['/health', '/v1/health']) {
      const res = await fetch(`${url}${path}`);
      expect([res.status, await res.json()]).to.deep.equal([200, { status: 'ok' }]);
    }
  });

  it("chat echo (vLLM's) opens the reply with the assistant message it continues, streamed (a delta of its own) or not", async () => {
    const body = { messages: [{ role: 'user', content: 'Once upon' }, { role: 'assistant', content: ' a time, there' }], continue_final_message: true, add_generation_prompt: false };
    const reply = (await chat(body)).choices[0]!.message.content;
    expect(reply).to.not.equal('');
    expect((await chat({ ...body, echo: true })).choices[0]!.message.content).to.equal(` a time, there${reply}`);
    const streamed = await streamedContent({ ...body, echo: true });
    expect(streamed[0]).to.equal(' a time, there');
    expect(streamed.join('')).to.equal(` a time, there${reply}`);
    // A last message of another role is not echoed.
    expect((await chat({ messages: [{ role: 'user', content: 'Once upon' }], echo: true })).choices[0]!.message.content).to.equal((await chat({ messages: [{ role: 'user', content: 'Once upon' }] })).choices[0]!.message.content);
  });

  it('skip_special_tokens false keeps the special tokens the reply writes', async () => {
    const forced = { prompt: PROMPT, max_tokens: 3, ignore_eos: true, logit_bias: { 2: 100 } };
    expect((await complete(forced)).choices[0]!.text).to.equal('');
    expect((await complete({ ...forced, skip_special_tokens: false })).choices[0]!.text).to.equal('</s></s></s>');
    const chatForced = { messages: [{ role: 'user', content: PROMPT }], max_tokens: 2, ignore_eos: true, logit_bias: { 2: 100 }, skip_special_tokens: false };
    expect((await chat(chatForced)).choices[0]!.message.content).to.equal('</s></s>');
  });

  it('truncate_prompt_tokens runs the prompt\'s last tokens (-1: as many as the context holds), and usage counts them', async () => {
    const all = await ids({ prompt: PROMPT });
    const cut = await complete({ prompt: PROMPT, truncate_prompt_tokens: 2 });
    expect(cut.usage.prompt_tokens).to.equal(2);
    expect(cut.choices[0]!.text).to.equal((await complete({ prompt: all.slice(-2) })).choices[0]!.text);
    expect((await complete({ prompt: all, truncate_prompt_tokens: 3 })).usage.prompt_tokens).to.equal(3);
    expect((await complete({ prompt: PROMPT, truncate_prompt_tokens: -1 })).usage.prompt_tokens).to.equal(all.length);
    // Echoed with log-probabilities, the text is what ran, so that the tokens' offsets index it and spell it.
    type Legacy = { tokens: string[]; text_offset: number[] };
    const echoed = (await complete({ prompt: PROMPT, truncate_prompt_tokens: 3, echo: true, logprobs: 0, max_tokens: 2 })) as unknown as { choices: { text: string; logprobs: Legacy }[] };
    const { text, logprobs } = echoed.choices[0]!;
    expect(logprobs.tokens).to.have.length(5);
    logprobs.tokens.forEach((t, i) => expect(text.slice(logprobs.text_offset[i], logprobs.text_offset[i]! + t.length), `token ${i}`).to.equal(t));
    // A prompt past the context (2048 tokens) is cut to its end rather than refused.
    const long = `${'The dog ran to the park. '.repeat(600)}${PROMPT}`;
    const longCut = await complete({ prompt: long, truncate_prompt_tokens: 5 });
    expect(longCut.choices[0]!.text).to.equal((await complete({ prompt: (await ids({ prompt: long.slice(-200) })).slice(-5) })).choices[0]!.text);

    const messages = [{ role: 'user', content: PROMPT }];
    const chatIds = await ids({ messages });
    const chatCut = await chat({ messages, truncate_prompt_tokens: 4 });
    expect(chatCut.usage.prompt_tokens).to.equal(4);
    expect(chatCut.choices[0]!.message.content).to.equal((await complete({ prompt: chatIds.slice(-4), max_tokens: 6 })).choices[0]!.text);
  });

  it('add_special_tokens: a completion without BOS when false, a chat with the tokenizer\'s BOS added when true, as /tokenize counts them', async () => {
    const bare = await ids({ prompt: PROMPT, add_special_tokens: false });
    const withoutBos = await complete({ prompt: PROMPT, add_special_tokens: false });
    expect(withoutBos.usage.prompt_tokens).to.equal(bare.length);
    expect(withoutBos.choices[0]!.text).to.equal((await complete({ prompt: bare })).choices[0]!.text);
    expect((await complete({ prompt: PROMPT })).usage.prompt_tokens).to.equal(bare.length + 1);

    const messages = [{ role: 'user', content: PROMPT }];
    const added = await ids({ messages, add_special_tokens: true });
    expect(added.length).to.equal((await ids({ messages })).length + 1);
    const chatAdded = await chat({ messages, add_special_tokens: true });
    expect(chatAdded.usage.prompt_tokens).to.equal(added.length);
    expect(chatAdded.choices[0]!.message.content).to.equal((await complete({ prompt: added, max_tokens: 6 })).choices[0]!.text);
  });
});
