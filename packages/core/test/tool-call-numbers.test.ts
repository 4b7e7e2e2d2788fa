/**
 * A history call's arguments (JSON text, as OpenAI sends them) reach the chat template as Python's values, as
 * transformers hands them over after `json.loads`: `1.0` is a float that prints, compares, divides and `tojson`s as one;
 * an integer past 2^53 keeps its digits; an object keeps its keys' order. Each expected text is what jinja2 3.1.6
 * renders from the same template in transformers' environment (its `tojson` is `json.dumps`), written here.
 */
import { expect } from 'chai';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TextTokenizer, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { models } from '../../../test/support/paths.js';
import { testDir } from './support/models.js';

/** A conversation whose assistant turn calls `f` with arguments `args` (JSON text). */
const calling = (args: string): ChatMessage[] => [
  { role: 'user', content: 'x' },
  { role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: args } }] },
];

/** Each argument through filters, arithmetic and a comparison, printed, and as JSON. */
const EACH =
  '{% for m in messages if m.tool_calls %}{% for k, v in m.tool_calls[0].function.arguments.items() %}' +
  '{{ k }}: int={{ v | int }} abs={{ v | abs }} neg={{ v < 0 }} half={{ v / 2 }} str={{ v }} json={{ v | tojson }}\n' +
  '{% endfor %}{% endfor %}';

/** The arguments printed whole, and as JSON in the layouts transformers' `tojson` takes. */
const WHOLE =
  '{% for m in messages if m.tool_calls %}{% set args = m.tool_calls[0].function.arguments %}{{ args }}\n' +
  '{{ m.tool_calls[0].function | tojson }}\n' +
  '{{ args | tojson(indent=2) }}\n' +
  '{{ args | tojson(sort_keys=true, separators=(",", ":"), ensure_ascii=true) }}\n' +
  '{{ args.values() | map("tojson") | join(" ") }}{% endfor %}';

describe("tool-call arguments in a chat template: Python's numbers", function () {
  this.timeout(60_000);
  let tok: TextTokenizer;

  before(async () => {
    const dir = testDir('tool-call-numbers');
    await copyFile(join(models.llamaFp16, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    await writeFile(join(dir, 'tokenizer_config.json'), await readFile(join(models.llamaFp16, 'tokenizer_config.json')));
    tok = await TextTokenizer.fromDirectory(dir);
  });

  const render = (template: string, args: string) => tok.applyChatTemplate(calling(args), { template, addGenerationPrompt: false });

  it('a float with a whole value, a negative one, a small one and a big integer compute as Python’s do', () => {
    expect(render(EACH, '{"a": 1.0, "b": -2.0, "c": 3.5, "d": -2.5, "e": -3, "f": 1e-7, "g": -12345678901234567890}')).to.equal(
      'a: int=1 abs=1.0 neg=False half=0.5 str=1.0 json=1.0\n' +
        'b: int=-2 abs=2.0 neg=True half=-1.0 str=-2.0 json=-2.0\n' +
        'c: int=3 abs=3.5 neg=False half=1.75 str=3.5 json=3.5\n' +
        'd: int=-2 abs=2.5 neg=True half=-1.25 str=-2.5 json=-2.5\n' +
        'e: int=-3 abs=3 neg=True half=-1.5 str=-3 json=-3\n' +
        'f: int=0 abs=1e-07 neg=False half=5e-08 str=1e-07 json=1e-07\n' +
        'g: int=-12345678901234567890 abs=12345678901234567890 neg=True half=-6.172839450617284e+18 str=-12345678901234567890 json=-12345678901234567890\n',
    );
  });

  it('printed, and tojson with an indent, sorted keys, separators, ensure_ascii and by map, in the keys’ own order', () => {
    expect(render(WHOLE, '{"b": 1.0, "2": [1e-7, 12345678901234567890], "10": {"é": -0.0, "x": 1E5}}')).to.equal(
      "{'b': 1.0, '2': [1e-07, 12345678901234567890], '10': {'é': -0.0, 'x': 100000.0}}\n" +
        '{"name": "f", "arguments": {"b": 1.0, "2": [1e-07, 12345678901234567890], "10": {"é": -0.0, "x": 100000.0}}}\n' +
        '{\n  "b": 1.0,\n  "2": [\n    1e-07,\n    12345678901234567890\n  ],\n  "10": {\n    "é": -0.0,\n    "x": 100000.0\n  }\n}\n' +
        '{"10":{"x":100000.0,"\\u00e9":-0.0},"2":[1e-07,12345678901234567890],"b":1.0}\n' +
        '1.0 [1e-07, 12345678901234567890] {"é": -0.0, "x": 100000.0}',
    );
  });
});
