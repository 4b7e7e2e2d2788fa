/**
 * Streamed log-probability lists are the whole answer's on every door that gives them (chat, legacy completions,
 * Ollama's chat and raw generate, the Responses API): the last tokens, which show nothing (a stop string's, cut from
 * the text; the end-of-sequence token after a character left unfinished), are in neither, and each streamed entry
 * goes out once its own text has. Scripted backbones over the stories vocabulary.
 */
import { expect } from 'chai';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedModule, storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const TEMPLATE = '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}';
const MESSAGES = [{ role: 'user', content: 'Q:' }];

type Entry = { token: string };
/** A door's text and listed tokens, whole and streamed. */
type Listed = { text: string; tokens: string[] };

/** A backbone that answers `Q:` with `reply` (its ids), then EOS. */
async function scripted(name: string, reply: (tokenizer: TextTokenizer) => number[]): Promise<string> {
  return (await scriptedModule(name, 'Q:', reply, { chatTemplate: TEMPLATE })).dir;
}

const sseData = async (res: Response) => (await res.text()).split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
const jsonLines = async (res: Response) => (await res.text()).trim().split('\n').map((l) => JSON.parse(l));

/** Each door's answer to `Q:` (with `stop`), whole and streamed. */
async function doors(at: string, stop: string[] | undefined): Promise<Record<string, { whole: Listed; streamed: Listed }>> {
  const post = (path: string, body: object) => postJson(at, path, body);
  const chat = { model: 'm', messages: MESSAGES, max_tokens: 20, logprobs: true, ...(stop ? { stop } : {}) };
  const completion = { model: 'm', prompt: 'Q:', max_tokens: 20, logprobs: 0, ...(stop ? { stop } : {}) };
  const ollama = { model: 'm', logprobs: true, options: { num_predict: 20, ...(stop ? { stop } : {}) } };
  const responses = { model: 'm', input: 'Q:', max_output_tokens: 20, include: ['message.output_text.logprobs'], ...(stop ? { stop } : {}) };
  const tokens = (entries: Entry[] | undefined) => (entries ?? []).map((e) => e.token);

  const chatWhole = ((await (await post('/v1/chat/completions', chat)).json()) as any).choices[0];
  const chatStream = await sseData(await post('/v1/chat/completions', { ...chat, stream: true }));
  const legacyWhole = ((await (await post('/v1/completions', completion)).json()) as any).choices[0];
  const legacyStream = await sseData(await post('/v1/completions', { ...completion, stream: true }));
  const generateWhole = (await (await post('/api/generate', { ...ollama, prompt: 'Q:', raw: true, stream: false })).json()) as any;
  const generateStream = await jsonLines(await post('/api/generate', { ...ollama, prompt: 'Q:', raw: true, stream: true }));
  const ollamaChatWhole = (await (await post('/api/chat', { ...ollama, messages: MESSAGES, stream: false })).json()) as any;
  const ollamaChatStream = await jsonLines(await post('/api/chat', { ...ollama, messages: MESSAGES, stream: true }));
  const responseWhole = ((await (await post('/v1/responses', responses)).json()) as any).output.find((i: any) => i.type === 'message').content[0];
  const responseStream = await sseData(await post('/v1/responses', { ...responses, stream: true }));
  const deltas = responseStream.filter((e) => e.type === 'response.output_text.delta');
  return {
    chat: {
      whole: { text: chatWhole.message.content, tokens: tokens(chatWhole.logprobs.content) },
      streamed: { text: chatStream.map((c) => c.choices[0]?.delta?.content ?? '').join(''), tokens: chatStream.flatMap((c) => tokens(c.choices[0]?.logprobs?.content)) },
    },
    completions: {
      whole: { text: legacyWhole.text, tokens: legacyWhole.logprobs.tokens },
      streamed: { text: legacyStream.map((c) => c.choices[0]?.text ?? '').join(''), tokens: legacyStream.flatMap((c) => c.choices[0]?.logprobs?.tokens ?? []) },
    },
    'ollama generate': {
      whole: { text: generateWhole.response, tokens: tokens(generateWhole.logprobs) },
      streamed: { text: generateStream.map((l) => l.response).join(''), tokens: generateStream.flatMap((l) => tokens(l.logprobs)) },
    },
    'ollama chat': {
      whole: { text: ollamaChatWhole.message.content, tokens: tokens(ollamaChatWhole.logprobs) },
      streamed: { text: ollamaChatStream.map((l) => l.message.content).join(''), tokens: ollamaChatStream.flatMap((l) => tokens(l.logprobs)) },
    },
    responses: {
      whole: { text: responseWhole.text, tokens: tokens(responseWhole.logprobs) },
      streamed: { text: deltas.map((e) => e.delta).join(''), tokens: deltas.flatMap((e) => tokens(e.logprobs)) },
    },
  };
}

describe('streamed log-probability lists, as the whole answer\'s', function () {
  this.timeout(180_000);
  const { serve } = useServers();

  it('leave out a stop string\'s tokens, cut from the text, whole and streamed on every door', async () => {
    const reply = 'Tom saw the END of it.';
    const at = await serve({ engine: { model: await scripted('streamed-lists-stop', (t) => t.encode(reply, false)) }, name: 'm' });
    // (`ENDX` holds `END` back; `D of` then cuts the reply inside it, at `EN`)
    const answers = await doors(at, ['ENDX', 'D of']);
    for (const [door, { whole, streamed }] of Object.entries(answers)) {
      expect(whole.text.trimStart(), door).to.equal('Tom saw the EN');
      expect(streamed, door).to.deep.equal(whole);
      // Joined, the listed tokens are the text: none of the cut `D of` is listed.
      expect(whole.tokens.join(''), door).to.equal(whole.text);
    }
  });

  it('leave out the end-of-sequence token after a character left unfinished, whole and streamed on every door', async () => {
    // (the emoji's last byte token left out: its first bytes show as U+FFFD when EOS ends the reply)
    const tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
    const ids = tokenizer.encode('Hi 😀', false).slice(0, -1);
    const at = await serve({ engine: { model: await scripted('streamed-lists-unfinished', () => ids) }, name: 'm' });
    const answers = await doors(at, undefined);
    for (const [door, { whole, streamed }] of Object.entries(answers)) {
      expect(whole.text.trimStart(), door).to.equal('Hi \uFFFD');
      expect(streamed, door).to.deep.equal(whole);
      // The reply's tokens, each once; no end-of-sequence token (`</s>`, shown as nothing) after them.
      expect(whole.tokens, door).to.have.length(ids.length);
    }
  });
});
