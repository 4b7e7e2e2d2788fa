/** Module directories made from builder models and the real stories260K tokenizer (vocab 512). */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { convertGguf } from '../../src/gguf/convert.js';
import { randomLlamaWeights, writeLlamaModel } from '../../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../../src/onnx/llama-spec.js';
import { writeModuleDir } from '../../src/modules/module-dir.js';
import { tokenizerFingerprint } from '../../src/tokenizer/fingerprint.js';
import type { ModuleManifest } from '../../src/modules/manifest.js';
import { models } from '../../../../test/support/paths.js';
import { testDir } from './models.js';
import { followScript } from './graph-edits.js';
import { bpeTokenizerFiles } from './bpe-vocab.js';
import { TextTokenizer, type ChatMessage } from '../../src/tokenizer/tokenizer.js';
import type { ToolsPrompt } from '../../src/tokenizer/tools-in-prompt.js';

let stories: Promise<string> | undefined;

/** The converted stories260K module (made once per test process). */
export function storiesModule(): Promise<string> {
  stories ??= (async () => {
    const dir = join(testDir('stories'), 'stories260K');
    await convertGguf(models.stories260K, dir, { name: 'stories260k' });
    return dir;
  })();
  return stories;
}

let storiesGqa: Promise<string> | undefined;
/** stories260K converted with its attention as GroupQueryAttention (right-padded batches), not the default op graph. */
export function storiesGqaModule(): Promise<string> {
  storiesGqa ??= (async () => {
    const dir = join(testDir('stories-gqa'), 'stories260K');
    await convertGguf(models.stories260K, dir, { name: 'stories260k', attention: 'gqa' });
    return dir;
  })();
  return storiesGqa;
}

/** A Llama config over the stories vocabulary. */
export function storiesConfig(over: Partial<LlamaConfig> = {}): LlamaConfig {
  return { vocabSize: 512, hiddenSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 96, ...over };
}

export interface ModuleSpec {
  name: string;
  config?: LlamaConfig;
  seed?: number;
  kind?: ModuleManifest['kind'];
  defaultWeight?: number;
  /** Edits applied to model.onnx after building (e.g. a logit bias), beside the module's tokenizer files. */
  edit?: (modelPath: string) => Promise<void>;
  /** Rewrites tokenizer.json before the manifest is written (a different tokenizer). */
  tokenizer?: (json: { model: { vocab: Record<string, number> }; added_tokens?: unknown[] }) => void;
  /** A chat template for tokenizer_config.json. */
  chatTemplate?: string;
  /** The tokenizer files instead of the stories ones (`tokenizer` then edits this tokenizer.json). */
  tokenizerFiles?: { tokenizerJson: object; tokenizerConfig: Record<string, unknown> };
}

/** Builds a module directory: random-weight Llama model, the stories tokenizer, a full manifest. */
export async function makeModule(spec: ModuleSpec): Promise<string> {
  const source = await storiesModule();
  const dir = join(testDir(spec.name), spec.name);
  await mkdir(dir, { recursive: true });
  const config = spec.config ?? storiesConfig();
  const tokenizer = spec.tokenizerFiles ? structuredClone(spec.tokenizerFiles.tokenizerJson) : JSON.parse(await readFile(join(source, 'tokenizer.json'), 'utf8'));
  spec.tokenizer?.(tokenizer);
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  const tokenizerConfig = spec.tokenizerFiles?.tokenizerConfig ?? JSON.parse(await readFile(join(source, 'tokenizer_config.json'), 'utf8'));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...tokenizerConfig, ...(spec.chatTemplate ? { chat_template: spec.chatTemplate } : {}) }));
  await writeLlamaModel(join(dir, 'model.onnx'), config, randomLlamaWeights(config, spec.seed ?? 1, 0.1));
  // The tokenizer files are in place: an edit may read them.
  if (spec.edit) await spec.edit(join(dir, 'model.onnx'));
  const kind = spec.kind ?? 'logit-reasoner';
  await writeModuleDir(dir, {
    name: spec.name,
    version: '1.0.0',
    kind,
    tasks: kind === 'logit-reasoner' ? ['test'] : [],
    description: `test ${kind}`,
    license: 'MIT',
    compat: { tokenizer: tokenizerFingerprint(tokenizer), vocabSize: config.vocabSize, hiddenSize: config.hiddenSize },
    ...(kind === 'logit-reasoner' ? { composition: { defaultWeight: spec.defaultWeight ?? 1, mode: 'logits' as const } } : {}),
    generation: { bosTokenId: 1, eosTokenIds: [2] },
    files: { model: 'model.onnx', tokenizer: 'tokenizer.json', tokenizerConfig: 'tokenizer_config.json' },
  });
  return dir;
}

/** What {@link scriptedModule} made: the module, its tokenizer, and the ids of the prompt it answers and of its reply. */
export interface ScriptedModule {
  dir: string;
  tokenizer: TextTokenizer;
  promptIds: number[];
  replyIds: number[];
}

/**
 * A backbone over the stories vocabulary (or bpe-vocab's byte-level one with `bpe`) that answers `prompt` (encoded
 * with BOS) with the ids `reply` gives for its tokenizer, then EOS, favoured for `eosRun` more positions (default
 * 50): its logits favour each token where it is due (`followScript`), so the reply is scripted for prompts of exactly
 * that length.
 */
export async function scriptedModule(
  name: string,
  prompt: string,
  reply: (tokenizer: TextTokenizer) => number[],
  opts: { chatTemplate?: string; bpe?: boolean; eosRun?: number } = {},
): Promise<ScriptedModule> {
  const files = opts.bpe ? bpeTokenizerFiles() : undefined;
  const vocab = files ? Math.max(...files.tokenizerJson.added_tokens.map((t) => t.id)) + 1 : 512;
  let made: Omit<ScriptedModule, 'dir'> | undefined;
  const dir = await makeModule({
    name,
    kind: 'backbone',
    seed: 4,
    config: storiesConfig({ vocabSize: vocab }),
    ...(opts.chatTemplate !== undefined ? { chatTemplate: opts.chatTemplate } : {}),
    ...(files ? { tokenizerFiles: files } : {}),
    edit: async (model) => {
      const tokenizer = await TextTokenizer.fromDirectory(dirname(model));
      const promptIds = tokenizer.encode(prompt, true);
      const replyIds = reply(tokenizer);
      // (EOS is the manifest's id 2, which makeModule writes for both vocabularies)
      await followScript(model, vocab, [...new Array<number>(promptIds.length - 1).fill(0), ...replyIds, ...new Array<number>(opts.eosRun ?? 50).fill(2)]);
      made = { tokenizer, promptIds, replyIds };
    },
  });
  return { dir, ...made! };
}

/**
 * A chat backbone (its template in tokenizer_config.json) that answers `messages` with `reply`, token by token, then
 * EOS (favoured for 200 more positions): its logits favour each reply token at the position where it is due (test support's `followScript`), so the
 * reply is scripted for prompts of exactly this conversation's length. Returns the module and the reply's ids.
 */
export async function scriptedChatModule(
  name: string,
  chatTemplate: string,
  messages: ChatMessage[],
  reply: string,
  /**
   * `specialTokens`: added tokens decoding drops (`[TOOL_CALLS]`); `textTokens`: added tokens that decode as text (Qwen3's
   * `<think>`); `bpe`: a byte-level BPE vocabulary (bpe-vocab's) instead of the stories SentencePiece one; `tools` as the
   * template renders them, or `toolsPrompt` as the system message describes them (the generic syntax's).
   */
  render: { templateKwargs?: Record<string, unknown>; tools?: unknown[]; toolsPrompt?: ToolsPrompt; specialTokens?: readonly string[]; textTokens?: readonly string[]; bpe?: boolean } = {},
): Promise<{ dir: string; replyIds: number[] }> {
  const added = [...(render.specialTokens ?? []).map((content) => ({ content, special: true })), ...(render.textTokens ?? []).map((content) => ({ content, special: false }))];
  const files = render.bpe ? bpeTokenizerFiles() : undefined;
  const base = files ? Math.max(...files.tokenizerJson.added_tokens.map((t) => t.id)) + 1 : 512;
  const vocab = base + added.length;
  // The vocabulary's own added tokens follow the base ones (stories: ids 512…), as a model's do.
  const withSpecial = (json: { added_tokens?: unknown[] }): void => {
    json.added_tokens = [
      ...(json.added_tokens ?? []),
      ...added.map(({ content, special }, i) => ({ id: base + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special })),
    ];
  };
  let replyIds: number[] = [];
  const follow = async (model: string) => {
    const tokenizer = await TextTokenizer.fromDirectory(dirname(model));
    const text = tokenizer.applyChatTemplate(messages, { template: chatTemplate, ...(render.templateKwargs ? { extra: render.templateKwargs } : {}), ...(render.tools ? { tools: render.tools } : {}), ...(render.toolsPrompt ? { toolsPrompt: render.toolsPrompt } : {}) });
    const prompt = tokenizer.encode(text, false);
    replyIds = tokenizer.encode(reply, false);
    // EOS is due after the reply, and favoured for 200 more positions (where a constraint may hold the reply longer).
    const script = [...new Array<number>(prompt.length - 1).fill(0), ...replyIds, ...new Array<number>(201).fill(2)];
    await followScript(model, vocab, script);
  };
  const dir = await makeModule({ name, kind: 'backbone', seed: 4, chatTemplate, config: storiesConfig({ vocabSize: vocab }), tokenizer: withSpecial, edit: follow, ...(files ? { tokenizerFiles: files } : {}) });
  return { dir, replyIds };
}
