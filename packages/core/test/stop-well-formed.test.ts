/**
 * Stop strings that are not well-formed UTF-16: a lone surrogate (JSON's `"\udc69"`) matched half of an emoji and cut
 * the reply inside it, leaving the other half, which Python clients fail to encode. Every door refuses one.
 */
import { expect } from 'chai';
import { Engine } from '../src/engine.js';
import { GenerateOptionsError } from '../src/generate/options.js';
import { cacheDir } from './support/models.js';
import { scriptedModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

/** The prompt and the reply the scripted model writes to it (👩 is \ud83d\udc69). */
const PROMPT = '😀é:';
const REPLY = 'Hi 😀 é 👩🏽‍💻 END';

/** A backbone over the stories vocabulary (its byte pieces spell the emoji) that answers {@link PROMPT} with {@link REPLY}. */
async function astralModule(): Promise<string> {
  return (await scriptedModule('astral-stops', PROMPT, (tokenizer) => tokenizer.encode(REPLY, false), { chatTemplate: `{{ bos_token }}${PROMPT}` })).dir;
}

describe('stop strings that are not well-formed', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let dir: string;
  let engine: Engine;

  before(async () => {
    dir = await astralModule();
    engine = await Engine.load({ model: dir, cacheDir });
  });
  after(() => engine?.dispose());

  it('refuses a stop string holding a lone surrogate, naming it, where a well-formed astral one stops', async () => {
    for (const stop of [['END', '\udc69'], ['END', '\ud83d'], ['END', 'a\udc69\ud83d']]) {
      expect(() => engine.stream({ prompt: PROMPT }, { stop })).to.throw(GenerateOptionsError, /stop\[1\] must be well-formed UTF-16/);
      expect(() => engine.generate({ prompt: PROMPT }, { stop }))
        .to.throw(GenerateOptionsError, JSON.stringify(stop[1]))
        .with.property('option', 'stop[1]');
    }
    const cut = (await engine.generate({ prompt: PROMPT }, { maxTokens: 60, stop: ['🏽'] })).rows[0]!;
    expect([cut.text.trimStart(), cut.finishReason]).to.deep.equal(['Hi 😀 é 👩', 'stop']);
  });

  it('answers 400 naming the stop string by the field the client sent, on every door', async () => {
    const at = await serve({ engine: { model: dir }, name: 'astral' });
    const messages = [{ role: 'user', content: 'x' }];
    const doors: [string, object, string][] = [
      ['/v1/completions', { model: 'astral', prompt: PROMPT, stop: ['END', '\udc69'] }, 'stop[1]'],
      ['/v1/completions', { model: 'astral', prompt: PROMPT, stop: ['END', '\udc69'], stream: true }, 'stop[1]'],
      ['/v1/completions', { model: 'astral', prompt: PROMPT, stop: '\udc69' }, 'stop'],
      ['/v1/chat/completions', { model: 'astral', messages, stop: ['END', '\udc69'] }, 'stop[1]'],
      ['/v1/chat/completions', { model: 'astral', messages, stop: ['END', '\udc69'], stream: true }, 'stop[1]'],
      ['/v1/messages', { model: 'astral', max_tokens: 8, messages, stop_sequences: ['END', '\udc69'] }, 'stop_sequences[1]'],
      ['/api/generate', { model: 'astral', prompt: PROMPT, stream: false, options: { stop: ['END', '\udc69'] } }, 'options.stop[1]'],
      ['/api/chat', { model: 'astral', messages, stream: false, options: { stop: ['END', '\udc69'] } }, 'options.stop[1]'],
    ];
    for (const [path, body, field] of doors) {
      const res = await postJson(at, path, body);
      const text = await res.text();
      expect(res.status, `${path} ${text}`).to.equal(400);
      expect(text, path).to.include(`"${field} must be well-formed UTF-16`);
      // (OpenAI's doors name the field as `param`)
      if (path.startsWith('/v1/c')) expect((JSON.parse(text) as { error: { param: string } }).error.param).to.equal(field);
    }
  });
});
