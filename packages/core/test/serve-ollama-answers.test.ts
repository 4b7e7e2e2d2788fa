/**
 * What Ollama's own sources have its API answer, through `reasonplug serve`: listings whose digests Ollama's CLI can
 * cut (64 hex digits, the files' bytes, `/api/ps`'s context length), tool calls with their ids and places, `/api/embed`
 * cutting an input past the context unless `truncate` is false, `keep_alive: 0` unloading, `/api/show` by its older
 * `name` and with the keys `ollama show` reads.
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ollama } from 'ollama';
import { postJson, useServers } from './support/servers.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { THINKING_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';

interface Manifest {
  files: Record<string, { sha256: string; size: number }>;
  provenance?: { convertedFrom?: { sha256: string } };
}

const manifestOf = async (dir: string) => JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8')) as Manifest;
const bytesOf = (m: Manifest) => Object.values(m.files).reduce((n, f) => n + f.size, 0);

describe("reasonplug serve: Ollama's API answers as Ollama's sources do", function () {
  this.timeout(180_000);
  let url: string;
  let stories: string;
  const { serve } = useServers();

  before(async () => {
    stories = await storiesModule();
    url = await serve({ engine: { model: stories, embeddings: true }, chatTemplate: TOOLS_TEMPLATE });
  });

  it('tags and ps give the converted GGUF\'s digest and the files\' bytes; ps the context length', async () => {
    const manifest = await manifestOf(stories);
    const client = new Ollama({ host: url });
    const [listed] = (await client.list()).models;
    // (the GGUF's own digest, as Ollama names a model's blob; `ollama list` prints its first 12 characters)
    expect(listed!.digest).to.equal(manifest.provenance!.convertedFrom!.sha256).and.match(/^[0-9a-f]{64}$/);
    expect(listed!.size).to.equal(bytesOf(manifest));
    const [running] = (await client.ps()).models;
    expect(running).to.include({ digest: listed!.digest, size: listed!.size });
    expect((running as unknown as { context_length: number }).context_length).to.equal(2048);
  });

  it('a module\'s listing gives its graph\'s digest; /api/show its keys under the architecture `ollama show` reads', async () => {
    const { dir } = await scriptedChatModule('ollama-answers-plain', THINKING_TEMPLATE, [{ role: 'user', content: 'Hi' }], 'Hello.');
    const at = await serve({ engine: { model: dir }, name: 'plain' });
    const manifest = await manifestOf(dir);
    const [listed] = (await new Ollama({ host: at }).list()).models;
    expect([listed!.digest, listed!.size]).to.deep.equal([manifest.files.model!.sha256, bytesOf(manifest)]);
    const info = (await new Ollama({ host: at }).show({ model: 'plain' })).model_info as unknown as Record<string, unknown>;
    // (no architecture declared: the keys go under `onnx`, the format it runs in)
    expect(info).to.include({ 'general.architecture': 'onnx', 'onnx.context_length': 2048, 'onnx.embedding_length': 48 });
    // the converted GGUF: its declared architecture, and its hidden size
    expect((await new Ollama({ host: url }).show({ model: 'stories260k' })).model_info).to.include({ 'general.architecture': 'llama', 'llama.embedding_length': 64 });
  });

  it('tool calls carry an id and their index, whole and streamed', async () => {
    const tools = [{ type: 'function', function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } } }];
    const reply = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>';
    const question = 'What are two and two?';
    const { dir } = await scriptedChatModule('ollama-answers-tools', THINKING_TEMPLATE, [{ role: 'user', content: question }], reply, { tools, textTokens: ['<tool_call>', '</tool_call>'] });
    const at = await serve({ engine: { model: dir }, name: 'tools' });
    type Call = { id: string; function: { index: number; name: string; arguments: unknown } };
    const body = { model: 'tools', messages: [{ role: 'user', content: question }], tools, options: { temperature: 0, num_predict: 100 } };
    const whole = (await (await postJson(at, '/api/chat', { ...body, stream: false })).json()) as { message: { tool_calls: Call[] } };
    const streamed = (await (await postJson(at, '/api/chat', body)).text())
      .trim()
      .split('\n')
      .flatMap((l) => (JSON.parse(l) as { message: { tool_calls?: Call[] } }).message.tool_calls ?? []);
    for (const calls of [whole.message.tool_calls, streamed]) {
      expect(calls.map((c) => [c.function.index, c.function.arguments])).to.deep.equal([[0, { a: 2, b: 2 }], [1, { a: 3, b: 4 }]]);
      calls.forEach((c) => expect(c.id).to.match(/^call_\S{8,}$/));
      expect(new Set(calls.map((c) => c.id)).size).to.equal(2);
    }
  });

  it('/api/embed cuts an input past the context unless truncate is false; /api/embeddings refuses it, as Ollama', async () => {
    const long = 'the cat sat. '.repeat(800);
    const cut = await postJson(url, '/api/embed', { model: 'stories260k', input: [long, 'a little girl'] });
    expect(cut.status).to.equal(200);
    const answer = (await cut.json()) as { embeddings: number[][]; prompt_eval_count: number };
    expect(answer.embeddings).to.have.length(2);
    // the first 2048 positions: the same vector as for those tokens given by id
    const ids = ((await (await postJson(url, '/tokenize', { model: 'stories260k', prompt: long })).json()) as { tokens: number[] }).tokens.slice(0, 2048);
    const byIds = (await (await postJson(url, '/v1/embeddings', { model: 'stories260k', input: ids })).json()) as { data: { embedding: number[] }[] };
    answer.embeddings[0]!.forEach((x, i) => expect(x).to.be.closeTo(byIds.data[0]!.embedding[i]!, 1e-5));
    const short = (await (await postJson(url, '/api/embed', { model: 'stories260k', input: 'a little girl' })).json()) as { embeddings: number[][]; prompt_eval_count: number };
    expect(answer.prompt_eval_count).to.equal(2048 + short.prompt_eval_count);
    for (const [path, body] of [['/api/embed', { input: long, truncate: false }], ['/api/embeddings', { prompt: long }]] as const) {
      const res = await postJson(url, path, { model: 'stories260k', ...body });
      expect(res.status, path).to.equal(400);
      expect(((await res.json()) as { error: string }).error, path).to.match(/more than the context length of 2048/);
    }
    expect((await postJson(url, '/api/embed', { model: 'stories260k', input: 'x', truncate: 'no' })).status).to.equal(400);
  });

  it('keep_alive 0 with nothing to answer says unload; /api/show takes the older `name`', async () => {
    for (const [path, body] of [['/api/generate', { prompt: '' }], ['/api/chat', { messages: [] }]] as const) {
      for (const keepAlive of [0, '0', '0s', '0m0s']) {
        const res = await postJson(url, path, { model: 'stories260k', stream: false, keep_alive: keepAlive, ...body });
        expect(await res.json(), `${path} ${keepAlive}`).to.include({ done: true, done_reason: 'unload' });
      }
      for (const keepAlive of [5, '5m', -1]) {
        expect(await (await postJson(url, path, { model: 'stories260k', stream: false, keep_alive: keepAlive, ...body })).json()).to.include({ done_reason: 'load' });
      }
    }
    const shown = await postJson(url, '/api/show', { name: 'stories260k' });
    expect(shown.status).to.equal(200);
    expect(((await shown.json()) as { details: { family: string } }).details.family).to.equal('llama');
  });
});
