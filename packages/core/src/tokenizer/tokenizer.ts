/**
 * Text ↔ ids for a model directory: Hugging Face `tokenizer.json` through @huggingface/tokenizers,
 * special ids gathered from the files that carry them, and chat templates through @huggingface/jinja.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { argumentsFormOf, withArgumentsAs, type ArgumentsForm } from './tool-call-arguments.js';
import { withToolsInPrompt, type FunctionTool, type ToolsPrompt } from './tools-in-prompt.js';
import { fimPromptIds, fimTokensOf, type FimTokens } from './fill-in-middle.js';
import { PythonTemplate, TemplateRaisedError } from './jinja-python.js';
import { pieceBytes, vocabularyKind, type VocabularyKind } from './token-bytes.js';
import { endsHeld, type DecodeFn } from './stream-decoder.js';
import { MANIFEST_FILE } from '../modules/manifest-file.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Raised when tokenizer files are missing or unusable. */
export class TokenizerError extends Error {
  override name = 'TokenizerError';
}

/**
 * Raised when a chat template uses a construct the renderer does not support: the template and this package are at
 * fault, not the messages it was given (a template's own `raise_exception` is a {@link TokenizerError}).
 */
export class ChatTemplateUnsupportedError extends TokenizerError {
  override name = 'ChatTemplateUnsupportedError';
}

/** One chat message as chat templates expect it. */
export interface ChatMessage {
  /** `system`, `user`, `assistant`, `tool`, or another role the template knows. */
  role: string;
  /** The message's text. */
  content: string;
  [key: string]: unknown;
}

type TokenizerConfig = Record<string, unknown> & { chat_template?: unknown };

/** What a chat template was found to do, each probed when first needed. */
interface TemplateProbes {
  argumentsForm?: ArgumentsForm;
  tools?: boolean;
  system?: boolean;
}

/**
 * A long text's beginning is encoded first when a token limit is known: this many characters per token of the limit
 * (twice English prose's ~4; a text of longer tokens is encoded whole), and this many tokens of slack for the
 * words at the cut.
 */
const PROBE_CHARS_PER_TOKEN = 8;
const PROBE_MARGIN = 64;

/** A tool rendered to find out whether a template shows tools to the model at all. */
const PROBE_TOOL: FunctionTool = { type: 'function', function: { name: 'reasonplug_probe', description: 'probe', parameters: { type: 'object', properties: {} } } };
const PROBE_TEXT = 'probe_text_9c41';

/** How errors name a template the caller gave, not the model's. */
const GIVEN = 'the given chat template';

/** The file recent transformers versions save a chat template in, beside tokenizer_config.json. */
const TEMPLATE_FILE = 'chat_template.jinja';

/**
 * `source` parsed; `where` names the template in the error raised when it does not parse: a TokenizerError for a
 * template the caller gave, a ChatTemplateUnsupportedError for the model's own (jinja2 may well read it: what fails
 * is this renderer, not the caller).
 */
function parseTemplate(source: string, where: string, given: boolean): PythonTemplate {
  try {
    return new PythonTemplate(source);
  } catch (err) {
    // The parser's own errors (and a TypeError on a template cut short) name neither the template nor its file.
    const message = `${where} does not parse: ${(err as Error).message}`;
    throw given ? new TokenizerError(message) : new ChatTemplateUnsupportedError(message);
  }
}

/**
 * The text of a tokenizer-side file, undefined when it is absent; one that cannot be read (a directory, no read
 * permission) is refused naming it, as a corrupt one is.
 */
async function readTextIfPresent(path: string): Promise<string | undefined> {
  try {
    // Decoded at once: read with an encoding, a multi-MB tokenizer.json is decoded chunk by chunk, and slower.
    return (await readFile(path)).toString('utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new TokenizerError(`${path} ${code === 'EISDIR' ? 'is a directory, not a file' : `cannot be read (${(err as Error).message})`}; download or export it again`);
  }
}

/** Reads a JSON object from a tokenizer-side file; undefined when the file is absent. */
export async function readJsonIfPresent(path: string): Promise<Record<string, unknown> | undefined> {
  const text = await readTextIfPresent(path);
  if (text === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TokenizerError(`${path} is not valid JSON (${(err as Error).message}); download or export it again`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new TokenizerError(`${path} does not hold a JSON object; download or export it again`);
  }
  return json as Record<string, unknown>;
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

function idList(value: unknown): number[] {
  if (typeof value === 'number') return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === 'number');
  return [];
}

/**
 * One past the largest id of the loaded model's vocabulary (the library places each token at its id) and of the
 * added tokens: what the library's `get_vocab(true)` spans, without its copy of the whole vocabulary, and without
 * walking tokenizer.json's vocabulary object again (150 ms of a 151,936-token load).
 */
function idCount(tokenizer: Tokenizer, json: Record<string, unknown>): number {
  let count = tokenizer.model?.vocab.length ?? 0;
  for (const t of Array.isArray(json.added_tokens) ? (json.added_tokens as { id?: unknown }[]) : []) {
    if (typeof t.id === 'number' && t.id >= count) count = t.id + 1;
  }
  return count;
}

/**
 * {@link TextTokenizer.encode} with a given tokenizer. Encoding is synchronous, and an 8 MB prompt held its thread
 * (a server's, or the model worker that steps every running request) for a minute before the context check could
 * refuse it: a text past `within` is refused from its beginning alone.
 */
function encodeWithin(tokenizer: Tokenizer, text: string, addSpecialTokens: boolean, within: number | undefined): number[] {
  const end = within === undefined ? Infinity : PROBE_CHARS_PER_TOKEN * (within + PROBE_MARGIN);
  if (within !== undefined && text.length > end) {
    // Cut where a word ends: the beginning's tokens are then the whole text's, but for a few at the cut.
    const space = text.lastIndexOf(' ', end);
    const head = tokenizer.encode(text.slice(0, space > end / 2 ? space : end), { add_special_tokens: addSpecialTokens }).ids.length;
    if (head > within + PROBE_MARGIN) {
      throw new TokenizerError(`the text is longer than the context length of ${within} tokens (its first ${end} of ${text.length} characters alone are ${head} tokens); shorten it`);
    }
  }
  return tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
}

/** Ids before a token enough for a decoder's look-behind when naming the token by the text it adds. */
export const DECODE_LOOK_BEHIND = 4;

/** The length of the common start of two strings. */
function commonPrefixLength(a: string, b: string): number {
  let n = 0;
  while (n < a.length && a[n] === b[n]) n++;
  return n;
}

/** A loaded tokenizer with the special ids generation needs. */
export class TextTokenizer {
  /** Number of ids the tokenizer can produce (base vocabulary plus added tokens). */
  readonly vocabSize: number;

  /** The ids of the special added tokens, once a decode keeping some of them needed them. */
  private specialIds: Set<number> | undefined;
  /** The tokenizer that matches no special added tokens, once a fill-in-the-middle prompt needed it. */
  private plain: Tokenizer | undefined;
  /** The ids of all added tokens, once `tokenBytes` needed them. */
  private addedIds: Set<number> | undefined;
  /** What each chat template used does with tools, calls and system messages, probed once per template. */
  private readonly probes = new Map<string, TemplateProbes>();

  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly config: TokenizerConfig,
    /** The file the model's chat templates were read from, for messages. */
    private readonly templatePath: string,
    /** Id prepended to prompts when the tokenizer adds one, else undefined. */
    readonly bosTokenId: number | undefined,
    /** Ids that end generation. */
    readonly eosTokenIds: readonly number[],
    /** Whether `encode` adds BOS by itself. */
    readonly addsBos: boolean,
    vocabSize: number,
    /** How the vocabulary's pieces spell bytes. */
    private readonly kind: VocabularyKind,
    /** The same tokenizer matching no special added tokens in text, made when first asked for. */
    private readonly makePlain: () => Tokenizer,
    /** Whether chat prompts are encoded as llama.cpp does (a module converted from GGUF; see `encodeChat`). */
    private readonly llamaCppChat: boolean,
  ) {
    this.vocabSize = vocabSize;
  }

  /**
   * Loads `tokenizer.json` (+ `tokenizer_config.json`, `generation_config.json`, `config.json` when present)
   * from a directory. `overrides` (e.g. from a module manifest) win over the files.
   */
  static async fromDirectory(
    dir: string,
    overrides: { bosTokenId?: number; eosTokenIds?: number[] } = {},
  ): Promise<TextTokenizer> {
    const [json, tokenizerConfig, templateFile, generationConfig, modelConfigFile, manifest] = await Promise.all([
      readJsonIfPresent(join(dir, 'tokenizer.json')),
      readJsonIfPresent(join(dir, 'tokenizer_config.json')),
      // Where recent transformers versions save the template.
      readTextIfPresent(join(dir, TEMPLATE_FILE)),
      readJsonIfPresent(join(dir, 'generation_config.json')),
      readJsonIfPresent(join(dir, 'config.json')),
      // (only its provenance: the manifest is validated where the module loads)
      readJsonIfPresent(join(dir, MANIFEST_FILE)),
    ]);
    if (!json) throw new TokenizerError(`no tokenizer.json in ${dir}; pass --prompt-ids or add the tokenizer files`);
    const config = (tokenizerConfig ?? {}) as TokenizerConfig;
    // As in transformers, a chat_template.jinja file wins over tokenizer_config.json's chat_template.
    if (templateFile !== undefined) config.chat_template = templateFile;
    const templatePath = join(dir, templateFile !== undefined ? TEMPLATE_FILE : 'tokenizer_config.json');
    const generation = generationConfig ?? {};
    const modelConfig = modelConfigFile ?? {};
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(json, config);
    } catch (err) {
      throw new TokenizerError(`cannot load ${join(dir, 'tokenizer.json')}: ${(err as Error).message}`);
    }
    const idOf = (token: unknown) => {
      const content = tokenContent(token);
      return content === undefined ? undefined : tokenizer.token_to_id(content);
    };
    // transformers stops at generation_config.json's ids, or config.json's when there is no generation config (one
    // does not add to the other). The tokenizer's EOS token joins them: some chat exports leave their end of turn
    // out of the generation config (early Llama 3 Instruct). (onnxruntime-genai's genai_config.json is known to
    // disagree with the tokenizer in the wild, so it is not consulted.)
    const configured = idList(generation.eos_token_id);
    const eos = overrides.eosTokenIds ?? [...new Set([...(configured.length > 0 ? configured : idList(modelConfig.eos_token_id)), ...idList(idOf(config.eos_token))])];
    const bos = overrides.bosTokenId ?? idList(generation.bos_token_id)[0] ?? idOf(config.bos_token);
    const probe = tokenizer.encode('a', { add_special_tokens: true }).ids;
    const addsBos = bos !== undefined && probe[0] === bos;
    // llama.cpp tokenizes code to fill in with its control tokens unmatched (`parse_special` false): a file that
    // spells "<|endoftext|>" holds those characters, not the end of text. User-defined added tokens still match.
    const makePlain = () => new Tokenizer({ ...json, added_tokens: (Array.isArray(json.added_tokens) ? json.added_tokens : []).filter((t: { special?: unknown }) => t.special !== true) }, config);
    const fromGguf = (manifest?.['provenance'] as { convertedFrom?: { format?: unknown } } | undefined)?.convertedFrom?.format === 'gguf';
    return new TextTokenizer(tokenizer, config, templatePath, bos, eos, addsBos, idCount(tokenizer, json), vocabularyKind(json), makePlain, fromGguf);
  }

  /**
   * Encodes text; `addSpecialTokens` (default true) follows the tokenizer's own post-processor. With `within` (a
   * model's context), a text whose beginning alone encodes to more tokens than that is refused without encoding the
   * rest: encoding is synchronous, and an 8 MB prompt held its thread (a server's, or the model worker that steps
   * every running request) for a minute before the context check could refuse it.
   */
  encode(text: string, addSpecialTokens = true, within?: number): number[] {
    return encodeWithin(this.tokenizer, text, addSpecialTokens, within);
  }

  /**
   * Encodes a prompt the chat template rendered as the model's own runtime does: transformers' way (the template
   * writes the special tokens, none is added), or, for a module converted from GGUF, llama.cpp's (a BOS the template
   * wrote first and an EOS it wrote last are taken off, and the tokenizer adds its own: a model whose vocabulary adds
   * BOS starts every chat with one, whether its template writes it or not).
   */
  encodeChat(text: string, within?: number): number[] {
    if (!this.llamaCppChat) return this.encode(text, false, within);
    const bos = this.addsBos && this.bosTokenId !== undefined ? this.tokenizer.id_to_token(this.bosTokenId) : undefined;
    const eos = this.config['add_eos_token'] === true ? tokenContent(this.config['eos_token']) : undefined;
    let body = bos && text.startsWith(bos) ? text.slice(bos.length) : text;
    if (eos && body.endsWith(eos)) body = body.slice(0, -eos.length);
    return this.encode(body, true, within);
  }

  /**
   * Decodes ids to text, dropping special tokens unless asked to keep them all, or the `kept` ones (a tool-call
   * marker such as Mistral's `[TOOL_CALLS]`, which the reply is read by).
   */
  decode(ids: readonly number[], skipSpecialTokens = true, kept?: ReadonlySet<number>): string {
    if (kept?.size && skipSpecialTokens) {
      // The other special tokens are dropped before the decoder runs, as skipping them does: one decoder pass over the rest.
      return this.decode(ids.filter((id) => kept.has(id) || !this.isSpecial(id)), false);
    }
    if (ids.length === 0) return '';
    return this.tokenizer.decode(ids as number[], { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /** Whether `id` is a special added token (BOS, EOS, a chat turn's marker), which decoding drops unless asked to keep it. */
  isSpecial(id: number): boolean {
    this.specialIds ??= new Set([...this.tokenizer.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
    return this.specialIds.has(id);
  }

  /**
   * The bytes token `id` stands for, where decoding it alone cannot say (a byte-fallback `<0xF0>`, or a byte-level
   * token holding part of a character, decode to U+FFFD or nothing); an added token's are its text's. Undefined for
   * an id the vocabulary lacks.
   */
  tokenBytes(id: number): number[] | undefined {
    const piece = this.tokenizer.id_to_token(id);
    if (piece === undefined || piece === null) return undefined;
    this.addedIds ??= new Set(this.tokenizer.get_added_tokens_decoder().keys());
    return this.addedIds.has(id) ? [...Buffer.from(piece, 'utf8')] : pieceBytes(piece, this.kind);
  }

  /** The bytes token `id` adds to a decode: none for a special token it drops (all with `skipSpecialTokens` but the `kept`). */
  private decodedBytes(id: number, skipSpecialTokens: boolean, kept?: ReadonlySet<number>): number[] | undefined {
    return skipSpecialTokens && this.isSpecial(id) && !kept?.has(id) ? [] : this.tokenBytes(id);
  }

  /**
   * The decode of a reply (special tokens dropped but the `kept` ones) for a stream decoder, with its byte
   * view: bytes that can be no character then come out as U+FFFD with their own token, as {@link textsAfter} names
   * them, and only a character not finished yet is held back.
   */
  replyDecoder(kept: ReadonlySet<number> = new Set()): DecodeFn {
    return Object.assign((ids: readonly number[]) => this.decode(ids, true, kept), { bytes: (id: number) => this.decodedBytes(id, true, kept) });
  }

  /** Token `id` as the vocabulary spells it (`▁Once`, `Ġw`, `<0xC3>`, an added token's text); undefined for an id it lacks. */
  piece(id: number): string | undefined {
    return this.tokenizer.id_to_token(id) ?? undefined;
  }

  /**
   * The text each of `ids` adds after `context` (a few ids before it: see {@link DECODE_LOOK_BEHIND}), so that a
   * word's leading space shows as the decoder writes it mid-text; special tokens kept unless `skipSpecialTokens`.
   * A token holding part of a character adds nothing and the one completing it adds the character, also where
   * `context` starts inside a character; bytes that can be no character add U+FFFD once they are known to be none.
   * Joined, the names are the text, but for a character left unfinished at its end.
   */
  textsAfter(context: readonly number[], ids: readonly number[], skipSpecialTokens = false): string[] {
    const bytes = (id: number) => this.decodedBytes(id, skipSpecialTokens);
    // A character not finished yet is not text: its U+FFFD goes. The rest compares as it decodes, the U+FFFD of a
    // `context` that starts inside a character included, so that those bytes (named before it) name nothing here.
    const settled = (ids: readonly number[]): string => {
      const text = this.decode(ids, skipSpecialTokens);
      return endsHeld(text, ids, bytes) ? text.slice(0, -1) : text;
    };
    const before = settled(context);
    return ids.map((id) => {
      const after = settled([...context, id]);
      return after.slice(commonPrefixLength(before, after));
    });
  }

  /** The id of a token given by its text (an added token's content or a vocabulary entry), if there is one. */
  tokenId(text: string): number | undefined {
    return this.tokenizer.token_to_id(text) ?? undefined;
  }

  /** The fill-in-the-middle tokens of a code model's vocabulary (see `fill-in-middle.ts`), if it has them. */
  get fimTokens(): FimTokens | undefined {
    return fimTokensOf((text) => this.tokenId(text), this.config.fim_tokens);
  }

  /**
   * The ids of a fill-in-the-middle prompt for the code between `prefix` and `suffix` (BOS first where the tokenizer
   * adds it); throws when the vocabulary has no FIM tokens.
   */
  encodeFillInMiddle(prefix: string, suffix: string, within?: number): number[] {
    const fim = this.fimTokens;
    if (!fim) throw new TokenizerError('this model has no fill-in-the-middle tokens (such as <|fim_prefix|>, <|fim_suffix|> and <|fim_middle|>)');
    this.plain ??= this.makePlain();
    const code = (text: string) => encodeWithin(this.plain!, text, false, within);
    return fimPromptIds(fim, code(prefix), code(suffix), this.addsBos ? this.bosTokenId : undefined);
  }

  /**
   * Parses a chat template given to render with (not the model's), so that one that does not parse can be refused
   * before a model loads: throws `TokenizerError` saying why.
   */
  static checkGivenTemplate(source: string): void {
    parseTemplate(source, GIVEN, true);
  }

  /**
   * Parses `template`, else the model's templates (its default one and its tool-use one), so that one that does not
   * parse is refused before any conversation: throws `TokenizerError` naming it (the model's file, or the given one).
   */
  checkChatTemplates(template?: string): void {
    for (const source of template !== undefined ? [template] : [this.chatTemplate, this.toolUseTemplate]) {
      if (source !== undefined) parseTemplate(source, this.templateName(source), this.templateName(source) === GIVEN);
    }
  }

  /** The chat template from chat_template.jinja or tokenizer_config.json, if the model ships one. */
  get chatTemplate(): string | undefined {
    const t = this.config.chat_template;
    if (typeof t === 'string') return t;
    if (Array.isArray(t)) {
      const named = t.find((x) => x && (x as { name?: string }).name === 'default') ?? t[0];
      return typeof named?.template === 'string' ? named.template : undefined;
    }
    return undefined;
  }

  /**
   * The template a model names `tool_use` beside its default one (Hermes 2 Pro's and Hermes 3's tokenizer_config.json,
   * a GGUF's `tokenizer.chat_template.tool_use`): conversations with tools are rendered with it, as transformers and
   * llama.cpp render them.
   */
  get toolUseTemplate(): string | undefined {
    const t = this.config.chat_template;
    if (!Array.isArray(t)) return undefined;
    const named = t.find((x) => x && (x as { name?: string }).name === 'tool_use') as { template?: unknown } | undefined;
    return typeof named?.template === 'string' ? named.template : undefined;
  }

  /**
   * Whether `template` (default the model's, its tool-use one where it has one) shows tools to the model: the probe
   * tool's name is in a conversation's text, or a tool changes the text. Where it does not, tools go into the prompt
   * as the `generic` syntax puts them ({@link ChatTemplateOptions}).
   */
  rendersTools(template?: string): boolean {
    return this.probed(template ?? this.toolUseTemplate, 'tools', (render) => {
      const probe: ChatMessage[] = [{ role: 'user', content: 'hello' }];
      let shown: string;
      try {
        shown = render(probe, [PROBE_TOOL]);
      } catch {
        return false; // a template that fails when given tools does not take them
      }
      if (shown.includes(PROBE_TOOL.function.name)) return true;
      try {
        return shown !== render(probe);
      } catch {
        // Hermes 2 Pro's and Command R+'s tool-use templates loop over `tools`, and cannot render without them.
        return false;
      }
    });
  }

  /** Whether `template` (default the model's) shows a system message (Gemma's raise an error on one). */
  rendersSystem(template?: string): boolean {
    return this.probed(template, 'system', (render) => {
      try {
        return render([{ role: 'system', content: PROBE_TEXT }, { role: 'user', content: 'hello' }]).includes(PROBE_TEXT);
      } catch {
        return false;
      }
    });
  }

  /**
   * Renders messages with the model's chat template (or `template`), ready to encode without adding
   * special tokens again. Throws when the model has no template and none is given.
   */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    const source = this.templateSource(options.template ?? (options.tools?.length ? this.toolUseTemplate : undefined));
    const render = this.renderer(source, options.extra);
    if (options.toolsPrompt) messages = withToolsInPrompt(messages, options.toolsPrompt, this.rendersSystem(source));
    if (messages.some((m) => Array.isArray(m.tool_calls))) {
      const form = this.probed(source, 'argumentsForm', argumentsFormOf);
      messages = withArgumentsAs(messages, form);
    }
    // An earlier turn's thought under the name gpt-oss's template reads it by (`thinking`) as well as Qwen3's.
    messages = messages.map((m) => (typeof m.reasoning_content === 'string' && m.thinking === undefined ? { ...m, thinking: m.reasoning_content } : m));
    try {
      return render(messages, options.tools, options.addGenerationPrompt ?? true);
    } catch (err) {
      // A template refuses what its model cannot take (Gemma's alternating roles, say) with raise_exception: the
      // caller's messages are at fault, and the error says so. Anything else is the renderer's failing, not theirs.
      if (err instanceof TemplateRaisedError) throw new TokenizerError(`the chat template cannot render these messages: ${err.message}`);
      throw new ChatTemplateUnsupportedError(`${this.templateName(source)} uses a construct the chat template renderer does not support: ${(err as Error).message}`);
    }
  }

  /** The template's text: `template`, else the model's; throws when there is neither. */
  private templateSource(template: string | undefined): string {
    const source = template ?? this.chatTemplate;
    if (!source) {
      throw new TokenizerError(
        'this model has no chat template (tokenizer_config.json has no chat_template); pass a template explicitly or use text completion',
      );
    }
    return source;
  }

  /** Renders a conversation (and tools) with `source`; `extra`: the template's own variables. */
  private renderer(source: string, extra?: Record<string, unknown>): (messages: ChatMessage[], tools?: unknown[], addGenerationPrompt?: boolean) => string {
    const special = (key: string) => tokenContent(this.config[key]) ?? '';
    const template = parseTemplate(source, this.templateName(source), this.templateName(source) === GIVEN);
    return (messages, tools, addGenerationPrompt = false) =>
      template.render({
        // None where there are no tools, as transformers and llama.cpp render (`tools is not none` is a common test).
        tools: null,
        // The template's own variables (Qwen3's enable_thinking, …) next: they cannot replace the conversation.
        ...extra,
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: special('bos_token'),
        eos_token: special('eos_token'),
        unk_token: special('unk_token'),
        pad_token: special('pad_token'),
        ...(tools ? { tools } : {}),
      });
  }

  /** How messages name `source`: the model's file (and which of its templates), or the template given. */
  private templateName(source: string): string {
    if (source === this.chatTemplate) return `${this.templatePath}: chat template`;
    if (source === this.toolUseTemplate) return `${this.templatePath}: tool_use chat template`;
    return GIVEN;
  }

  /** A fact about the template `template` (default the model's), found by `probe` once and kept. */
  private probed<K extends keyof TemplateProbes>(
    template: string | undefined,
    key: K,
    probe: (render: (messages: ChatMessage[], tools?: unknown[]) => string) => NonNullable<TemplateProbes[K]>,
  ): NonNullable<TemplateProbes[K]> {
    const source = this.templateSource(template);
    let facts = this.probes.get(source);
    if (!facts) this.probes.set(source, (facts = {}));
    const known = facts[key];
    if (known !== undefined) return known as NonNullable<TemplateProbes[K]>;
    const render = this.renderer(source);
    return (facts[key] = probe((messages, tools) => render(messages, tools)));
  }
}

/** How {@link TextTokenizer.applyChatTemplate} renders. */
export interface ChatTemplateOptions {
  /** The template's text; default the model's. */
  template?: string;
  /** Whether the prompt ends opening the assistant's turn (default true). */
  addGenerationPrompt?: boolean;
  /** Tools the template renders itself (OpenAI's `{type: 'function', function: {…}}`). */
  tools?: unknown[];
  /**
   * Tools for a template that renders none ({@link TextTokenizer.rendersTools} false): described in the system
   * message, with the calls and results of earlier turns in the `generic` syntax's JSON (see `tools-in-prompt.ts`).
   */
  toolsPrompt?: ToolsPrompt;
  /** The template's own variables (`chat_template_kwargs`). */
  extra?: Record<string, unknown>;
}
