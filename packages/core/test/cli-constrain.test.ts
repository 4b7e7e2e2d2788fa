import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { cacheDir, testDir } from './support/models.js';
import { storiesModule } from './support/modules.js';
import { runReasonplug } from './support/cli.js';

/** The CLI with its own cache beside the tests' model cache. */
const reasonplug = (...args: string[]) => runReasonplug(args, { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') });

describe('reasonplug generate --json-schema / --grammar / --regex', function () {
  this.timeout(120_000);
  const sampling = ['--temperature', '0.7', '--seed', '11', '--repetition-penalty', '1.3', '--max-tokens', '120', '--json'];

  it('constrains the reply to a schema file, a grammar file or a pattern, and refuses bad input by name', async () => {
    const model = await storiesModule();
    const dir = testDir('cli-constrain');
    const schema = { type: 'object', properties: { name: { enum: ['Lily', 'Tom'] }, age: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['name', 'age'] };
    await writeFile(join(dir, 'schema.json'), JSON.stringify(schema));
    await writeFile(join(dir, 'answer.gbnf'), 'root ::= ("yes" | "no") ", " [a-z]{2,6} "."\n');
    await writeFile(join(dir, 'bad.json'), '{"type": "object", "not": {}}');
    const prompt = ['generate', '--model', model, '--prompt', 'Once upon a time'];

    const bySchema = await reasonplug(...prompt, '--json-schema', join(dir, 'schema.json'), ...sampling);
    expect(bySchema.code, bySchema.stderr).to.equal(0);
    const out = JSON.parse(bySchema.stdout) as { text: string; parsed: unknown; finishReason: string };
    expect(out.finishReason).to.equal('eos');
    expect(JSON.parse(out.text)).to.deep.equal(out.parsed);
    expect(new Ajv2020().validate(schema, out.parsed)).to.equal(true);

    const byGrammar = await reasonplug(...prompt, '--grammar', join(dir, 'answer.gbnf'), ...sampling);
    expect((JSON.parse(byGrammar.stdout) as { text: string }).text).to.match(/^(yes|no), [a-z]{2,6}\.$/);
    const byRegex = await reasonplug(...prompt, '--regex', '[A-Z][a-z]{2,5}!', ...sampling);
    expect((JSON.parse(byRegex.stdout) as { text: string }).text).to.match(/^[A-Z][a-z]{2,5}!$/);

    const bad = await reasonplug(...prompt, '--json-schema', join(dir, 'bad.json'), ...sampling);
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/keyword "not"/);
    const both = await reasonplug(...prompt, '--regex', 'a', '--grammar', join(dir, 'answer.gbnf'));
    expect(both.code).to.not.equal(0);
    expect(both.stderr).to.match(/at most one of --json-schema, --grammar and --regex/);
    const missing = await reasonplug(...prompt, '--json-schema', join(dir, 'nope.json'));
    expect(missing.stderr).to.match(/--json-schema .*nope\.json: cannot read the file \(ENOENT\)/);
  });
});
