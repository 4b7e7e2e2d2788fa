/**
 * gpt-oss's replies with `reasoning_format: none`: the analysis message stays in the content as the model wrote it,
 * its header and its `<|end|>` kept, as llama.cpp's gpt-oss parser gives it with format none; the other messages
 * lose their markers. The same text whole and streamed, however the reply is cut, and through `reasonplug serve`.
 */
import { expect } from 'chai';
import { HARMONY_TOKENS, HarmonyReplySplitter } from '../src/chat/harmony.js';
import { scriptedChatModule } from './support/modules.js';
import { HARMONY_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';

const QUESTION = 'What are two and two?';
const THOUGHT = 'Two and two make four.';
const ANSWER = 'Four.';
const ANALYSIS = `<|channel|>analysis<|message|>${THOUGHT}<|end|>`;
const ANSWERED = `${ANALYSIS}<|start|>assistant<|channel|>final<|message|>${ANSWER}<|return|>`;

/** The content and calls of `text` through a splitter with reasoning_format none, for each cut into two pieces and char by char. */
function everyCut(text: string, cut = false): { reasoning: string; content: string; calls: string[] }[] {
  const cuts = [...Array.from({ length: text.length + 1 }, (_, k) => [text.slice(0, k), text.slice(k)]), [...text]];
  return cuts.map((pieces) => {
    const s = new HarmonyReplySplitter(false);
    const out = { reasoning: '', content: '', calls: [] as string[] };
    for (const part of [...pieces.map((p) => s.push(p)), s.end(cut)]) {
      out.reasoning += part.reasoning;
      out.content += part.content;
      out.calls.push(...part.toolCalls.map((c) => `${c.name} ${c.arguments}`));
    }
    return out;
  });
}

describe('harmony replies with reasoning_format none', function () {
  this.timeout(180_000);
  const { serve } = useServers();

  it('the analysis message is content with its header and its <|end|>, whole and streamed alike', () => {
    const cases: [string, string, string[]][] = [
      [ANSWERED, `${ANALYSIS}${ANSWER}`, []],
      // a later analysis, and one written with its recipient's header form: from its channel on
      [`<|channel|>commentary<|message|>Adding.<|end|><|start|>assistant<|channel|>analysis<|message|>${THOUGHT}<|end|><|start|>assistant to=functions.add<|channel|>commentary json<|message|>{"a": 2, "b": 2}<|call|>`, `Adding.${ANALYSIS}`, ['add {"a": 2, "b": 2}']],
      // a thought the reply ends in: its header and body, no closer
      [`<|channel|>analysis<|message|>${THOUGHT}`, `<|channel|>analysis<|message|>${THOUGHT}`, []],
    ];
    for (const [text, content, calls] of cases) for (const got of everyCut(text)) expect(got, text).to.deep.equal({ reasoning: '', content, calls });
    // cut by its token limit in the closer: the start of the closer is dropped, as from any body
    for (const got of everyCut(`<|channel|>analysis<|message|>${THOUGHT}<|en`, true)) expect(got.content).to.equal(`<|channel|>analysis<|message|>${THOUGHT}`);
  });

  it('reasonplug serve gives the analysis message in the content, in a reply and a stream', async () => {
    const { dir } = await scriptedChatModule('harmony-none', HARMONY_TEMPLATE, [{ role: 'user', content: QUESTION }], ANSWERED, { specialTokens: HARMONY_TOKENS, bpe: true });
    const url = await serve({ engine: { model: dir }, name: 'harmony-none' });
    const body = { model: 'harmony-none', messages: [{ role: 'user', content: QUESTION }], max_tokens: 80, reasoning_format: 'none' };
    const reply = (await (await postJson(url, '/v1/chat/completions', body)).json()) as { choices: { message: { content: string; reasoning_content?: string } }[] };
    expect(reply.choices[0]!.message.content).to.equal(`${ANALYSIS}${ANSWER}`);
    expect(reply.choices[0]!.message.reasoning_content ?? '').to.equal('');
    const stream = await (await postJson(url, '/v1/chat/completions', { ...body, stream: true })).text();
    const deltas = stream.split('\n').filter((l) => l.startsWith('data: {')).map((l) => (JSON.parse(l.slice(6)) as { choices: { delta: { content?: string; reasoning_content?: string } }[] }).choices[0]?.delta);
    expect(deltas.map((d) => d?.content ?? '').join('')).to.equal(`${ANALYSIS}${ANSWER}`);
    expect(deltas.map((d) => d?.reasoning_content ?? '').join('')).to.equal('');
  });
});
