/**
 * The package's published types as a consumer's editor sees them: its declarations are emitted from src as the
 * build emits them (in memory), and read back by the TypeScript compiler. The options' docs survive the emit, the
 * types public signatures use can be imported by name, and `withStructuredOutput` gives the schema's type.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import ts from 'typescript';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Where the emitted declarations seem to lie (never written): inside the package, so that its dependencies resolve. */
const out = join(pkg, 'types-check');
/** Core from its source, as the tests take it (no build of core needed). */
const base: ts.CompilerOptions = { customConditions: ['@reasonplug/source'], skipLibCheck: true, types: ['node'] };

/** The declarations the package's tsconfig emits from src, by path under {@link out}, and the program that emitted them. */
function emitDeclarations(): { program: ts.Program; files: Map<string, string> } {
  const config = ts.getParsedCommandLineOfConfigFile(join(pkg, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => { throw new Error(ts.flattenDiagnosticMessageText(d.messageText, ' ')); } })!;
  // (not composite: core's sources come into the program through the source condition, outside this project's list)
  const options = { ...config.options, ...base, outDir: out, emitDeclarationOnly: true, composite: false, incremental: false, declarationMap: false, tsBuildInfoFile: undefined };
  const program = ts.createProgram(config.fileNames, options);
  const files = new Map<string, string>();
  for (const name of config.fileNames) {
    const result = program.emit(program.getSourceFile(name), (file, text) => files.set(file, text), undefined, true);
    expect(result.emitSkipped, name).to.equal(false);
  }
  return { program, files };
}

/** A program over `roots` that sees `files` (virtual) beside what is on disk. */
function programWith(files: Map<string, string>, roots: string[]): ts.Program {
  const options: ts.CompilerOptions = { ...base, strict: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022 };
  const host = ts.createCompilerHost(options);
  const [read, exists, getSourceFile, dirExists] = [host.readFile.bind(host), host.fileExists.bind(host), host.getSourceFile.bind(host), host.directoryExists?.bind(host)];
  host.readFile = (name) => files.get(name) ?? read(name);
  host.fileExists = (name) => files.has(name) || exists(name);
  host.directoryExists = (name) => name === out || (dirExists?.(name) ?? true);
  host.getSourceFile = (name, language, ...rest) => {
    const text = files.get(name);
    return text !== undefined ? ts.createSourceFile(name, text, language) : getSourceFile(name, language, ...rest);
  };
  return ts.createProgram(roots, options, host);
}

/** Each property of the entry point's exported types and classes declared in this package: whether it has a doc. */
function documented(program: ts.Program, entry: string): Map<string, boolean> {
  const checker = program.getTypeChecker();
  const found = new Map<string, boolean>();
  for (const exported of checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(entry)!)!)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    if (!(symbol.flags & (ts.SymbolFlags.TypeAlias | ts.SymbolFlags.Interface | ts.SymbolFlags.Class))) continue;
    const type = checker.getDeclaredTypeOfSymbol(symbol);
    for (const part of type.isUnionOrIntersection() ? [type, ...type.types] : [type]) {
      for (const property of checker.getPropertiesOfType(part)) {
        const file = property.declarations?.[0]?.getSourceFile().fileName;
        if (file?.startsWith(pkg)) found.set(`${exported.name}.${property.name}`, property.getDocumentationComment(checker).length > 0);
      }
    }
  }
  return found;
}

describe('published types of @reasonplug/langchain', function () {
  this.timeout(180_000);
  let emitted: { program: ts.Program; files: Map<string, string> };
  before(() => {
    emitted = emitDeclarations();
  });

  it('keeps the docs of every documented option in the emitted declarations', () => {
    const index = join(out, 'index.d.ts');
    const inSource = documented(emitted.program, join(pkg, 'src', 'index.ts'));
    const inDeclarations = documented(programWith(emitted.files, [index]), index);
    const lost = [...inSource].filter(([key, doc]) => doc && inDeclarations.get(key) !== true).map(([key]) => key);
    expect(lost).to.deep.equal([]);
    // (the options a consumer hovers in `ChatReasoner.create({ … })` and a call's options among them)
    for (const key of ['ChatReasonerOptions.backbone', 'ChatReasonerOptions.maxTokens', 'ChatReasonerOptions.reasoners', 'ReasonerLLMOptions.timeout', 'ChatReasonerOptions.streaming', 'ChatReasonerCallOptions.reasoners', 'ChatReasonerCallOptions.thinkingBudget', 'EmbeddingsOptions.dimensions', 'EmbeddingsOptions.backbone']) {
      expect(inDeclarations.get(key), key).to.equal(true);
    }
  });

  it('types withStructuredOutput by the schema and exports the types public signatures name', () => {
    const consumer = join(out, 'consumer.ts');
    const source = `
      import { z } from 'zod';
      import type { ChatReasoner, ChatCallOptions, ChatReasonerCallOptions, ChatReasonerOptions, GenerationOptions, OpenAIResponseFormat, ReasonerLLMOptions, ReasonerWeight } from './index.js';
      const Joke = z.object({ setup: z.string(), punchline: z.string() });
      export async function tell(model: ChatReasoner): Promise<string> {
        const joke = await model.withStructuredOutput(Joke).invoke('Tell me a joke');
        // @ts-expect-error -- the answer is the schema's type, not any
        joke.setup.notAProperty;
        const { raw, parsed } = await model.withStructuredOutput(Joke, { includeRaw: true }).invoke('Tell me a joke');
        // @ts-expect-error -- as is the parsed answer beside the raw message
        parsed.notAProperty;
        const loose = await model.withStructuredOutput({ type: 'object', properties: { n: { type: 'number' } } }).invoke('A number');
        return joke.setup + parsed.punchline + raw.text + String(loose.n);
      }
      export const format: OpenAIResponseFormat = { type: 'json_schema', json_schema: { schema: { type: 'object' } } };
      // (as ChatOpenAI's callers write it: name and strict are taken, not read)
      export const named: OpenAIResponseFormat = { type: 'json_schema', json_schema: { name: 'answer', description: 'the answer', schema: { type: 'object' }, strict: true } };
      export const chat: ChatCallOptions = { reasoningFormat: 'none', thinkingBudget: 64 };
      export const call: Partial<ChatReasonerCallOptions> = { response_format: format, ...chat, maxTokens: 8 };
      export const settings: GenerationOptions = { temperature: 0.7, latent: 'fixed:2' };
      export const weight: ReasonerWeight = [{ until: 40, weight: 1.2 }, { weight: 1 }];
      // (as ChatOpenAI's callers write their options: streaming is taken)
      export const created: ChatReasonerOptions = { backbone: 'x', timeout: 1000, maxConcurrency: 2, streaming: true, cache: true };
      export const completion: ReasonerLLMOptions = { backbone: 'x', reasoners: [{ module: 'acme/math@^1' }], streaming: false };
    `;
    const program = programWith(new Map([...emitted.files, [consumer, source]]), [consumer]);
    const errors = ts.getPreEmitDiagnostics(program, program.getSourceFile(consumer)).map((d) => {
      const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 : 0;
      return `${line}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
    });
    expect(errors).to.deep.equal([]);
  });
});
