/**
 * The model names a server answers to, as vLLM and TGI name LoRA adapters: the backbone's name, a composition
 * `<backbone>+<reasoner>+…` of any loaded reasoners (in the order written, each once), and aliases given at
 * start. The backbone alone runs with no reasoner.
 */
import { HttpError, badRequest } from './errors.js';

/** One entry of `GET /v1/models`. */
export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  /** The model a composition is built on (the backbone's name), null for the backbone itself. */
  parent: string | null;
  root: string;
  /** The reasoners a composition runs (none for the backbone). */
  reasoners: string[];
  /** Positions a request may use, prompt and reply (vLLM's field), when the model declares its context. */
  max_model_len?: number;
}

/** Ollama's default tag: a name without a tag is `<name>:latest`. */
const DEFAULT_TAG = ':latest';

/** Whether a served name carries an Ollama tag (a `:` in its last path segment; a registry host's port is no tag). */
function hasTag(name: string): boolean {
  return name.slice(name.lastIndexOf('/') + 1).includes(':');
}

/** `<name>` for `<name>:latest` (the tag in any case) where `<name>` has no tag of its own; undefined for any other name. */
function withoutDefaultTag(model: string): string | undefined {
  const name = model.toLowerCase().endsWith(DEFAULT_TAG) ? model.slice(0, -DEFAULT_TAG.length) : undefined;
  return name !== undefined && !hasTag(name) ? name : undefined;
}

/** The other way to write `model` with Ollama's default tag: `<name>` for `<name>:latest`, and the reverse. */
function defaultTagTwin(model: string): string | undefined {
  return withoutDefaultTag(model) ?? (hasTag(model) ? undefined : `${model}${DEFAULT_TAG}`);
}

/**
 * The name `serve` gives a model it loads by its Ollama name, and `convert` the module: as Ollama's clients write it,
 * the default tag left out (`stories:latest` → `stories`; `stories:260k` as it is).
 */
export function ollamaServedName(name: string): string {
  return withoutDefaultTag(name) ?? name;
}

/** A served name as Ollama lists it: with its tag, the default one where it has none (`stories` → `stories:latest`). */
export function ollamaListedName(name: string): string {
  return hasTag(name) ? name : `${name}${DEFAULT_TAG}`;
}

/** Whether two names are the same, or (`foldCase`) the same but for case. */
function sameName(a: string, b: string, foldCase: boolean): boolean {
  return foldCase ? a.toLowerCase() === b.toLowerCase() : a === b;
}

/** Raised for an alias that does not name a composition of what is loaded. */
export class AliasError extends Error {
  override name = 'AliasError';
}

/** The names served: backbone, compositions, aliases. */
export class ServedModels {
  private readonly aliases = new Map<string, string[]>();
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(
    /** The backbone's name. */
    readonly backbone: string,
    /** Names of the loaded reasoners, in load order. */
    readonly reasoners: readonly string[],
    aliases: Record<string, string> = {},
    /** The model's context length, when it declares one. */
    private readonly contextLength?: number,
  ) {
    for (const [alias, target] of Object.entries(aliases)) {
      if (alias === backbone || alias.includes('+')) throw new AliasError(`alias "${alias}" must differ from the backbone's name and hold no "+"`);
      const resolved = this.compose(target);
      if (!resolved) throw new AliasError(`alias ${alias}=${target}: "${target}" is not ${backbone} or ${backbone}+<reasoner>+… of the loaded reasoners (${reasoners.join(', ') || 'none'})`);
      this.aliases.set(alias, resolved);
    }
  }

  /**
   * The reasoners `model` runs; 404 for a name that is not served, 400 for a reasoner listed twice. A served name
   * answers to it with or without Ollama's default tag (`stories`, `stories:latest`), on every route: that is how
   * Ollama's clients write it, and how `/api/tags` lists it. A name matched by none exactly is matched ignoring case,
   * as Ollama finds its models.
   */
  resolve(model: string): string[] {
    const names = [model, defaultTagTwin(model)].filter((n) => n !== undefined);
    for (const foldCase of [false, true]) {
      for (const name of names) {
        const alias = this.alias(name, foldCase);
        if (alias) return alias;
        const reasoners = this.compose(name, foldCase);
        if (!reasoners) continue;
        const twice = reasoners.find((r, i) => reasoners.indexOf(r) !== i);
        if (twice) throw badRequest(`model "${model}" lists the reasoner ${twice} twice; list each once`, 'model');
        return reasoners;
      }
    }
    throw new HttpError(404, `The model "${model}" does not exist: this server runs ${this.backbone}, compositions ${this.backbone}+<reasoner>+… of (${this.reasoners.join(', ') || 'no reasoners'}) and aliases (${[...this.aliases.keys()].join(', ') || 'none'})`, 'invalid_request_error', 'model_not_found', {}, 'model');
  }

  /** The `reasonplug` extension's reasoners, each named as a loaded one (else a 400 naming the entry). */
  checkExtension(reasoners: readonly { name: string }[]): void {
    reasoners.forEach(({ name }, i) => {
      const param = `reasonplug.reasoners[${i}].name`;
      if (!this.reasoners.includes(name)) throw badRequest(`${param} "${name}" is not a loaded reasoner: this server has ${this.reasoners.join(', ') || 'none'}`, param);
    });
  }

  /** The cards of `GET /v1/models`: backbone, each reasoner with it, all of them with it, then the aliases. */
  list(): ModelCard[] {
    const card = (id: string, reasoners: string[]): ModelCard => ({
      id,
      object: 'model',
      created: this.created,
      owned_by: 'reasonplug',
      parent: reasoners.length ? this.backbone : null,
      root: this.backbone,
      reasoners,
      ...(this.contextLength !== undefined ? { max_model_len: this.contextLength } : {}),
    });
    const compositions = this.reasoners.map((r) => [r]);
    if (this.reasoners.length > 1) compositions.push([...this.reasoners]);
    return [
      card(this.backbone, []),
      ...compositions.map((rs) => card([this.backbone, ...rs].join('+'), rs)),
      ...[...this.aliases].map(([alias, rs]) => card(alias, rs)),
    ];
  }

  /** The reasoners of the alias `name`, if it is one. */
  private alias(name: string, foldCase: boolean): string[] | undefined {
    if (!foldCase) return this.aliases.get(name);
    return [...this.aliases].find(([alias]) => sameName(alias, name, true))?.[1];
  }

  /** The reasoners (by their loaded names) of `name` read as the backbone or a composition on it. */
  private compose(name: string, foldCase = false): string[] | undefined {
    const prefix = `${this.backbone}+`;
    if (sameName(name, this.backbone, foldCase)) return [];
    if (!sameName(name.slice(0, prefix.length), prefix, foldCase)) return undefined;
    const parts = name.slice(prefix.length).split('+').map((p) => this.reasoners.find((r) => sameName(r, p, foldCase)));
    return parts.every((p) => p !== undefined) ? parts : undefined;
  }
}
