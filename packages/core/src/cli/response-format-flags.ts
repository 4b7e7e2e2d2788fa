/** `--json-schema FILE`, `--grammar FILE`, `--regex P`: the reply's structure from the command line. */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import type { ResponseFormat } from '../constrain/types.js';

export interface ResponseFormatFlags {
  jsonSchema?: string;
  grammar?: string;
  regex?: string;
}

function readText(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`${flag} ${path}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/** The response format the flags ask for (at most one of them), read and parsed before the model loads. */
export function responseFormatFromFlags(flags: ResponseFormatFlags): ResponseFormat | undefined {
  const given = (['jsonSchema', 'grammar', 'regex'] as const).filter((k) => flags[k] !== undefined);
  if (given.length > 1) throw new InvalidArgumentError('give at most one of --json-schema, --grammar and --regex');
  if (flags.jsonSchema !== undefined) {
    const text = readText('--json-schema', flags.jsonSchema);
    let schema: unknown;
    try {
      schema = JSON.parse(text);
    } catch (err) {
      throw new InvalidArgumentError(`--json-schema ${flags.jsonSchema}: not JSON (${(err as Error).message})`);
    }
    if (typeof schema !== 'boolean' && (typeof schema !== 'object' || schema === null || Array.isArray(schema))) {
      throw new InvalidArgumentError(`--json-schema ${flags.jsonSchema}: a JSON Schema is an object (or a boolean)`);
    }
    return { type: 'json_schema', schema: schema as Record<string, unknown> | boolean };
  }
  if (flags.grammar !== undefined) return { type: 'grammar', grammar: readText('--grammar', flags.grammar) };
  if (flags.regex !== undefined) {
    if (!flags.regex) throw new InvalidArgumentError('--regex: give a non-empty pattern');
    return { type: 'regex', pattern: flags.regex };
  }
  return undefined;
}
