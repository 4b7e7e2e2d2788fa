/**
 * The fields vLLM's and llama.cpp's clients send on the OpenAI routes: each honoured under its own name (llama.cpp's
 * `n_predict`, `repeat_penalty`, `seed: -1`, `response_format` with a schema; vLLM's `documents`, stop rules, prompt
 * fields) or refused by name (`chat_template`, samplers the engine does not run), never dropped. Read as the parsers
 * read them, and on a loopback server of the converted stories260K.
 */
import { expect } from 'chai';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { HttpError } from '../src/serve/errors.js';
import { parseChatRequest, parseCompletionRequest, parseTokenizeRequest } from '../src/serve/requests.js';
import { parseResponsesRequest } from '../src/serve/responses-request.js';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const CHAT = { model: 's', messages: [{ role: 'user', content: 'Once upon a time' }] };
const COMPLETION = { model: 's', prompt: 'Once upon a time' };

/** The 400 a parser throws for `body`: its param, code and message. */
function refusal(parse: () => unknown): { param: string | null; code: string | null; message: string } {
  try {
    parse();
  } catch (e) {
    expect(e).to.be.instanceOf(HttpError);
    const error = e as HttpError;
    expect(error.status).to.equal(400);
    return { param: error.param, code: error.code, message: error.message };
  }
  throw new Error('no 400');
}

const chat = (fields: Record<string, unknown>) => parseChatRequest({ ...CHAT, ...fields });
const completion = (fields: Record<string, unknown>) => parseCompletionRequest({ ...COMPLETION, ...fields });
const both = [chat, completion];

describe("OpenAI routes: vLLM's and llama.cpp's request fields, as parsed", () => {
  it("n_predict is max_tokens; -1 no limit (completions' 16 too); a different max_tokens is a 400 naming n_predict", () => {
    for (const parse of both) {
      expect(parse({ n_predict: 5 }).options.maxTokens).to.equal(5);
      expect(parse({ n_predict: 5, max_tokens: 5 }).options.maxTokens).to.equal(5);
      expect(parse({ n_predict: -1 }).options.maxTokens).to.equal(undefined);
      expect(refusal(() => parse({ n_predict: 5, max_tokens: 6 })).param).to.equal('n_predict');
      expect(refusal(() => parse({ n_predict: -1, max_completion_tokens: 6 })).message).to.match(/n_predict -1 and max_completion_tokens 6 differ/);
      for (const bad of [0, -2, 1.5, '5']) expect(refusal(() => parse({ n_predict: bad })).param).to.equal('n_predict');
    }
    expect(completion({}).options.maxTokens).to.equal(16);
  });

  it('repeat_penalty is repetition_penalty; both and different is a 400 naming repeat_penalty', () => {
    for (const parse of both) {
      expect(parse({ repeat_penalty: 1.3 }).options.repetitionPenalty).to.equal(1.3);
      expect(parse({ repeat_penalty: 1.3, repetition_penalty: 1.3 }).options.repetitionPenalty).to.equal(1.3);
      expect(refusal(() => parse({ repeat_penalty: 1.3, repetition_penalty: 1.1 })).param).to.equal('repeat_penalty');
      expect(refusal(() => parse({ repeat_penalty: 0 })).param).to.equal('repeat_penalty');
    }
  });

  it('stream_options: include_usage true or false (absent or null: false), only beside stream: true, as OpenAI and vLLM take it', () => {
    for (const parse of both) {
      expect(parse({ stream: true, stream_options: { include_usage: true } }).includeUsage).to.equal(true);
      for (const off of [{}, { include_usage: false }, { include_usage: null }]) expect(parse({ stream: true, stream_options: off }).includeUsage).to.equal(false);
      expect(parse({ stream: false, stream_options: null }).includeUsage).to.equal(false);
      for (const bad of ['yes', 1, {}]) expect(refusal(() => parse({ stream: true, stream_options: { include_usage: bad } })).param).to.equal('stream_options.include_usage');
      for (const stream of [false, undefined]) expect(refusal(() => parse({ stream, stream_options: { include_usage: true } })).param).to.equal('stream_options');
    }
  });

  it("stream_options on the Responses API: its include_obfuscation true or false, only beside stream: true, as the chat's", () => {
    const responses = (fields: Record<string, unknown>) => parseResponsesRequest({ model: 's', input: 'Once upon a time', ...fields });
    for (const parse of [...both, responses]) {
      for (const given of [{}, { include_obfuscation: true }, { include_obfuscation: false }, { include_obfuscation: null }]) expect(() => parse({ stream: true, stream_options: given })).to.not.throw();
      expect(() => parse({ stream: false, stream_options: null })).to.not.throw();
      for (const bad of ['yes', 1, {}]) expect(refusal(() => parse({ stream: true, stream_options: { include_obfuscation: bad } })).param).to.equal('stream_options.include_obfuscation');
      for (const bad of [true, 'yes', []]) expect(refusal(() => parse({ stream: true, stream_options: bad })).param).to.equal('stream_options');
      for (const stream of [false, undefined]) expect(refusal(() => parse({ stream, stream_options: { include_obfuscation: false } })).message).to.equal('stream_options is only allowed with stream: true');
    }
  });

  it('seed -1 is no seed', () => {
    for (const parse of both) {
      expect(parse({ seed: -1 }).options).to.not.have.property('seed');
      expect(parse({ seed: -2 }).options.seed).to.equal(-2);
    }
  });

  it("response_format json_object with a schema (llama.cpp's) is that schema's constraint", () => {
    const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
    for (const parse of both) {
      expect(parse({ response_format: { type: 'json_object', schema } }).options.responseFormat).to.deep.equal({ type: 'json_schema', schema });
      expect(parse({ response_format: { type: 'json_object' } }).options.responseFormat).to.deep.equal({ type: 'json_object' });
      expect(refusal(() => parse({ response_format: { type: 'json_object', schema: 3 } })).param).to.equal('response_format.schema');
    }
  });

  it('documents are the template variable documents; a different chat_template_kwargs.documents is a 400', () => {
    const documents = [{ title: 't', text: 'upon' }];
    expect(chat({ documents }).templateKwargs).to.deep.equal({ documents });
    expect(chat({ documents, chat_template_kwargs: { documents, x: 1 }, reasoning_effort: 'low' }).templateKwargs).to.deep.equal({ reasoning_effort: 'low', documents, x: 1 });
    expect(refusal(() => chat({ documents, chat_template_kwargs: { documents: [] } })).param).to.equal('documents');
    for (const bad of ['upon', ['upon'], { text: 'upon' }]) expect(refusal(() => chat({ documents: bad })).param).to.equal('documents');
  });

  it('a per-request chat_template is refused by name, pointing at --chat-template', () => {
    const error = refusal(() => chat({ chat_template: '{{ messages[0].content }}' }));
    expect(error).to.include({ param: 'chat_template', code: 'unsupported_parameter' });
    expect(error.message).to.include('--chat-template');
    // /tokenize too, beside a prompt as beside messages
    for (const body of [{ prompt: 'Once', chat_template: 'x' }, { messages: [{ role: 'user', content: 'Hi' }], chat_template: 'x' }]) {
      expect(refusal(() => parseTokenizeRequest(body))).to.include({ param: 'chat_template', code: 'unsupported_parameter' });
    }
  });

  it('the samplers and outputs the server does not run: taken at their neutral value, refused by name at another', () => {
    const neutral = {
      use_beam_search: false, priority: 0, allowed_token_ids: null, bad_words: [], prompt_logprobs: null, return_tokens_as_token_ids: false,
      mirostat: 0, typical_p: 1, tfs_z: 1, xtc_probability: 0, dry_multiplier: 0, top_n_sigma: -1, dynatemp_range: 0, n_probs: 0,
    };
    const other = {
      use_beam_search: true, priority: 1, allowed_token_ids: [261, 286], bad_words: [' there'], prompt_logprobs: 0, return_tokens_as_token_ids: true,
      mirostat: 2, typical_p: 0.5, tfs_z: 0.9, xtc_probability: 0.5, dry_multiplier: 0.8, top_n_sigma: 1, dynatemp_range: 0.5, n_probs: 3,
    };
    for (const parse of both) {
      parse(neutral);
      for (const [key, value] of Object.entries(other)) {
        expect(refusal(() => parse({ [key]: value })), key).to.include({ param: key, code: 'unsupported_parameter' });
      }
    }
  });

  it("vLLM's stop rules: stop_token_ids, min_tokens and include_stop_str_in_output, as engine options", () => {
    for (const parse of both) {
      expect(parse({ stop_token_ids: [286, 2], min_tokens: 3, include_stop_str_in_output: true, max_tokens: 10 }).options).to.include({ minTokens: 3, includeStopString: true, maxTokens: 10 });
      expect(parse({ stop_token_ids: [286] }).options.stopTokenIds).to.deep.equal([286]);
      // (their neutral values leave the options unset)
      const plain = parse({ stop_token_ids: [], min_tokens: 0, include_stop_str_in_output: false }).options;
      for (const key of ['stopTokenIds', 'minTokens', 'includeStopString']) expect(plain).to.not.have.property(key);
      for (const bad of [286, [-1], ['a'], [1.5]]) expect(refusal(() => parse({ stop_token_ids: bad })).param).to.equal('stop_token_ids');
      for (const bad of [-1, 1.5, '3']) expect(refusal(() => parse({ min_tokens: bad })).param).to.equal('min_tokens');
      expect(refusal(() => parse({ min_tokens: 11, max_tokens: 10 })).param).to.equal('min_tokens');
      expect(refusal(() => parse({ include_stop_str_in_output: 1 })).param).to.equal('include_stop_str_in_output');
    }
    // (completions' default limit of 16 holds it too)
    expect(refusal(() => completion({ min_tokens: 17 })).param).to.equal('min_tokens');
    expect(chat({ min_tokens: 17 }).options.minTokens).to.equal(17);
  });

  it("vLLM's prompt and output fields: skip_special_tokens, truncate_prompt_tokens, add_special_tokens, chat echo", () => {
    for (const parse of both) {
      expect(parse({}).keepSpecialTokens).to.equal(false);
      expect(parse({ skip_special_tokens: false }).keepSpecialTokens).to.equal(true);
      expect(parse({ skip_special_tokens: true }).keepSpecialTokens).to.equal(false);
      expect(refusal(() => parse({ skip_special_tokens: 'no' })).param).to.equal('skip_special_tokens');
      expect(parse({})).to.not.have.property('truncatePromptTokens');
      expect(parse({ truncate_prompt_tokens: 3 }).truncatePromptTokens).to.equal(3);
      expect(parse({ truncate_prompt_tokens: -1 }).truncatePromptTokens).to.equal(-1);
      for (const bad of [0, -2, 1.5]) expect(refusal(() => parse({ truncate_prompt_tokens: bad })).param).to.equal('truncate_prompt_tokens');
      expect(refusal(() => parse({ add_special_tokens: 'yes' })).param).to.equal('add_special_tokens');
    }
    expect(completion({}).addSpecialTokens).to.equal(true);
    expect(completion({ add_special_tokens: false }).addSpecialTokens).to.equal(false);
    expect(chat({}).addSpecialTokens).to.equal(false);
    expect(chat({ add_special_tokens: true }).addSpecialTokens).to.equal(true);
    expect(chat({}).echo).to.equal(false);
    expect(chat({ echo: true }).echo).to.equal(true);
    expect(refusal(() => chat({ echo: 'yes' })).param).to.equal('echo');
  });
});

/** A template that renders vLLM's `documents` before the messages. */
const DOCUMENTS_TEMPLATE = "{{ bos_token }}{% for d in documents or [] %}{{ d['text'] }} {% endfor %}{% for m in messages %}{{ m['content'] }}{% endfor %}";

type Answer = { choices: { text?: string; message?: { content: string }; finish_reason: string }[]; usage: { prompt_tokens: number; completion_tokens: number } };

describe("reasonplug serve: vLLM's and llama.cpp's request fields on the OpenAI routes", function () {
  this.timeout(180_000);
  const { serve } = useServers();
  let url: string;
  const post = async (path: string, body: Record<string, unknown>) => {
    const res = await postJson(url, path, body);
    return { status: res.status, body: (await res.json()) as Answer & { error: { param: string; code: string } } };
  };
  const ok = async (path: string, body: Record<string, unknown>): Promise<Answer> => {
    const { status, body: answer } = await post(path, body);
    expect(status, JSON.stringify(answer)).to.equal(200);
    return answer;
  };
  const text = (a: Answer) => a.choices[0]!.text ?? a.choices[0]!.message!.content;

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, name: 's', chatTemplate: DOCUMENTS_TEMPLATE });
  });

  it('n_predict limits the reply (chat without max_tokens; -1 lifts completions past their 16)', async () => {
    const limited = await ok('/v1/chat/completions', { ...CHAT, temperature: 0, ignore_eos: true, n_predict: 5 });
    expect(limited.usage.completion_tokens).to.equal(5);
    expect(limited.choices[0]!.finish_reason).to.equal('length');
    const unlimited = await ok('/v1/completions', { ...COMPLETION, temperature: 0, ignore_eos: true, n_predict: -1 });
    // (to the end of the context, as llama.cpp's, past the engine's own default of 256 too: stories260K's 2048
    // positions, and the token sampled from the last)
    expect(unlimited.usage.prompt_tokens + unlimited.usage.completion_tokens).to.equal(2048 + 1);
    expect(unlimited.choices[0]!.finish_reason).to.equal('length');
    const { status, body } = await post('/v1/completions', { ...COMPLETION, n_predict: 5, max_tokens: 6 });
    expect([status, body.error.param]).to.deep.equal([400, 'n_predict']);
  });

  it('repeat_penalty penalizes as repetition_penalty does', async () => {
    const greedy = { ...COMPLETION, temperature: 0, max_tokens: 40 };
    const plain = text(await ok('/v1/completions', greedy));
    const llama = text(await ok('/v1/completions', { ...greedy, repeat_penalty: 3 }));
    expect(llama).to.not.equal(plain);
    expect(llama).to.equal(text(await ok('/v1/completions', { ...greedy, repetition_penalty: 3 })));
  });

  it('seed -1 draws afresh each time, on chat and completions', async () => {
    for (const [path, body] of [['/v1/completions', COMPLETION], ['/v1/chat/completions', CHAT]] as const) {
      const draws = await Promise.all([1, 2, 3, 4].map(async () => text(await ok(path, { ...body, temperature: 1.2, max_tokens: 16, seed: -1 }))));
      expect(new Set(draws).size, `${path}: ${draws.join(' | ')}`).to.be.greaterThan(1);
    }
  });

  it("response_format json_object with a schema: the reply follows the schema", async () => {
    const schema = { type: 'object', properties: { mood: { enum: ['happy', 'sad'] } }, required: ['mood'], additionalProperties: false };
    const validate = new Ajv2020({ strict: false }).compile(schema);
    for (const seed of [1, 2, 3]) {
      const answer = await ok('/v1/chat/completions', { ...CHAT, temperature: 1, seed, max_tokens: 40, response_format: { type: 'json_object', schema } });
      const reply = text(answer);
      expect(answer.choices[0]!.finish_reason, reply).to.equal('stop');
      expect(validate(JSON.parse(reply)), reply).to.equal(true);
    }
  });

  it('documents reach the template (as chat_template_kwargs.documents do); a per-request chat_template is a 400', async () => {
    const documents = [{ title: 't', text: 'The little dog' }];
    const greedy = { ...CHAT, temperature: 0, max_tokens: 8 };
    const without = await ok('/v1/chat/completions', greedy);
    const withDocuments = await ok('/v1/chat/completions', { ...greedy, documents });
    expect(withDocuments.usage.prompt_tokens).to.be.greaterThan(without.usage.prompt_tokens);
    expect(await ok('/v1/chat/completions', { ...greedy, chat_template_kwargs: { documents } })).to.deep.include({ usage: withDocuments.usage });
    const { status, body } = await post('/v1/chat/completions', { ...greedy, chat_template: '{{ messages[0].content }}' });
    expect([status, body.error.param, body.error.code]).to.deep.equal([400, 'chat_template', 'unsupported_parameter']);
  });

  it('a sampler the engine does not run is refused by name (mirostat, typical_p), not sampled without', async () => {
    for (const fields of [{ mirostat: 2 }, { typical_p: 0.01 }]) {
      const { status, body } = await post('/v1/completions', { ...COMPLETION, temperature: 1.5, seed: 3, ...fields });
      expect([status, body.error.param, body.error.code]).to.deep.equal([400, Object.keys(fields)[0], 'unsupported_parameter']);
    }
    await ok('/v1/completions', { ...COMPLETION, mirostat: 0, typical_p: 1, top_n_sigma: -1 });
  });
});
