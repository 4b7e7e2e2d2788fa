import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { XGrammarFactory, grammarVocabulary, pickAccepted, type Constraint } from '../src/constrain/index.js';
import { Sampler, createRng } from '../src/sampling/index.js';
import { storiesModule } from './support/modules.js';

/** The ids whose bit is set in a bitmask. */
const allowedIds = (words: Int32Array) => Array.from(words).flatMap((word, w) => Array.from({ length: 32 }, (_, b) => (((word >>> b) & 1) === 1 ? [w * 32 + b] : [])).flat());

describe('picking under a grammar without its bitmask where that is exact', function () {
  this.timeout(120_000);
  const VOCAB = 512;
  const EOS = 2;
  const grammar = 'root ::= "{\\"n\\": " [0-9]+ ", \\"s\\": \\"" [a-z ]* "\\"}"';
  let factory: XGrammarFactory;
  const fresh = () => factory.create({ type: 'grammar', grammar }, [EOS]);

  before(async () => {
    const dir = await storiesModule();
    factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, VOCAB), 'grammar-pick');
  });

  it('tryAccept refuses every token the bitmask forbids (special tokens and EOS before the end included) and takes an allowed one', async () => {
    const rng = createRng(3);
    for (let path = 0; path < 3; path++) {
      const c = await fresh();
      for (let k = 0; k < 40 && !c.isComplete(); k++) {
        const allowed = new Set(allowedIds(await c.allowed()));
        for (let t = 0; t < VOCAB; t++) if (!allowed.has(t)) expect(c.tryAccept(t), `path ${path} step ${k} token ${t}`).to.equal(false);
        const pick = [...allowed][Math.floor(rng() * allowed.size)]!;
        expect(c.tryAccept(pick)).to.equal(true);
      }
      c.dispose();
    }
  });

  it('greedy: the pick made first from the whole row equals the pick under the bitmask, token for token', async () => {
    const rng = createRng(5);
    let unmasked = 0;
    for (let path = 0; path < 4; path++) {
      const [fast, reference] = [await fresh(), await fresh()];
      const [sFast, sRef] = [new Sampler(), new Sampler()];
      for (let k = 0; k < 50 && !reference.isComplete(); k++) {
        // Logits that favour allowed tokens half of the time, so both outcomes of the first pick occur.
        const words = await reference.allowed();
        const allowed = new Set(allowedIds(words));
        const logits = Float32Array.from({ length: VOCAB }, (_, t) => rng() * 4 + (allowed.has(t) && rng() < 0.5 ? 3 : 0));
        const want = sRef.sample(logits.slice(), { generated: [] }, words);
        reference.accept(want);
        // (as a row whose last pick found most tokens allowed: it computes no bitmask ahead)
        fast.prefetch = false;
        expect(await pickAccepted(fast, sFast, logits.slice(), { generated: [] }), `path ${path} step ${k}`).to.equal(want);
      }
      expect(fast.isComplete()).to.equal(reference.isComplete());
      unmasked += fast.clock.unmasked;
      expect(fast.clock.unmasked).to.be.below(fast.clock.picks.length);
      fast.dispose();
      reference.dispose();
    }
    expect(unmasked).to.be.greaterThan(0);
  });

  it('sampled (T 1): a first draw kept only when allowed, else redrawn under the bitmask, has the masked distribution p/Z', async () => {
    // A state seven tokens in (the lowest allowed id each time), where several tokens are allowed; the logits
    // give the allowed ones about half the mass.
    const probe = await fresh();
    const prefix: number[] = [];
    for (let k = 0; k < 7; k++) {
      const id = allowedIds(await probe.allowed())[0]!;
      probe.accept(id);
      prefix.push(id);
    }
    probe.dispose();
    const atState = async (): Promise<Constraint> => {
      const c = await fresh();
      for (const id of prefix) c.accept(id);
      return c;
    };
    const state = await atState();
    const allowed = allowedIds(await state.allowed());
    state.dispose();
    expect(allowed.length).to.be.greaterThan(1);
    const rng = createRng(8);
    const logits = Float32Array.from({ length: VOCAB }, () => rng() * 2);
    for (const t of allowed) logits[t] = logits[t]! + Math.log(VOCAB / allowed.length);
    let z = 0;
    const p = Array.from(logits, (l) => Math.exp(l));
    const total = p.reduce((a, b) => a + b, 0);
    for (const t of allowed) z += p[t]! / total;
    expect(z).to.be.within(0.3, 0.7);
    const counts = new Map<number, number>();
    const draws = 3000;
    const sampler = new Sampler({ temperature: 1, seed: 21 });
    let refused = 0;
    for (let i = 0; i < draws; i++) {
      const c = await atState();
      c.prefetch = false;
      const id = await pickAccepted(c, sampler, logits.slice(), { generated: [] });
      refused += c.clock.unmasked === 0 ? 1 : 0;
      counts.set(id, (counts.get(id) ?? 0) + 1);
      c.dispose();
    }
    // Total variation distance to p/Z over the allowed tokens; every draw allowed.
    expect([...counts.keys()].every((t) => allowed.includes(t))).to.equal(true);
    const tv = 0.5 * allowed.reduce((d, t) => d + Math.abs((counts.get(t) ?? 0) / draws - p[t]! / total / z), 0);
    expect(tv).to.be.below(0.05);
    // Both branches ran, about as often as Z says.
    expect(refused / draws).to.be.within(1 - z - 0.05, 1 - z + 0.05);
  });

  it('a row meant to compute its bitmask ahead picks under it even where none was computed (a drafted position)', async () => {
    const c = await fresh();
    expect(c.prefetch).to.equal(true);
    const sampler = new Sampler({ temperature: 1, seed: 3 });
    await pickAccepted(c, sampler, Float32Array.from({ length: VOCAB }, (_, t) => (t % 5) / 2), { generated: [] });
    expect([c.clock.unmasked, c.clock.fills.length]).to.deep.equal([0, 1]);
    c.dispose();
  });

  it('truncated sampling (top-p) always picks under the bitmask', async () => {
    const c = await fresh();
    const sampler = new Sampler({ temperature: 0.8, topP: 0.9, seed: 1 });
    expect(sampler.exactWithoutMask).to.equal(false);
    for (let k = 0; k < 10; k++) await pickAccepted(c, sampler, Float32Array.from({ length: VOCAB }, (_, t) => (t % 7) / 3), { generated: [] });
    expect(c.clock.unmasked).to.equal(0);
    expect(c.clock.fills.length).to.equal(10);
    c.dispose();
  });
});
