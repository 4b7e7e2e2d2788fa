/**
 * The output items a server's Responses answers gave out (messages, reasoning, function calls), kept by id so that a
 * later request's `{"type": "item_reference", "id": …}` reads as the item it names: the AI SDK's OpenAI provider and
 * other clients of OpenAI's stored responses send earlier turns so. The store is in memory and bounded by count and
 * bytes, the least recently used item going first; it is one server's, lost on restart and not shared by replicas.
 * Items are kept in a scope (the API key they were answered to), and only a request in the same scope reads them.
 */

/** An output item as a response gives it: its type and id, and the rest of its fields. */
export type OutputItem = Record<string, unknown> & { type: string; id: string };

/** Items kept at most by default. */
const DEFAULT_MAX_ITEMS = 10_000;
/** Bytes of items (as JSON) kept at most by default: 64 MiB. */
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

/** Output items by id, least recently used first out. */
export class ResponseItems {
  /** Each item's JSON and its size by id, in order of use (a Map iterates in insertion order: the first is the least recent). */
  private readonly held = new Map<string, { json: string; bytes: number }>();
  private heldBytes = 0;

  constructor(
    readonly maxItems = DEFAULT_MAX_ITEMS,
    readonly maxBytes = DEFAULT_MAX_BYTES,
  ) {
    if (!(Number.isSafeInteger(maxItems) && maxItems >= 1)) throw new RangeError(`maxItems must be a whole number >= 1 (got ${maxItems})`);
    if (!(Number.isSafeInteger(maxBytes) && maxBytes >= 1)) throw new RangeError(`maxBytes must be a whole number >= 1 (got ${maxBytes})`);
  }

  /** Items held. */
  get size(): number {
    return this.held.size;
  }

  /** Bytes of the items held, as JSON in UTF-8. */
  get bytes(): number {
    return this.heldBytes;
  }

  /**
   * Keeps a finished answer's items as they are now (later changes to them are not seen), in `scope`; an item alone
   * over `maxBytes` is not kept.
   */
  keep(items: readonly OutputItem[], scope = ''): void {
    for (const item of items) {
      const key = scoped(scope, item.id);
      // (log-probabilities, many times the text's size, are dropped: an item read as input needs its text only)
      const json = JSON.stringify(item, (key, value: unknown) => (key === 'logprobs' ? undefined : value));
      const bytes = Buffer.byteLength(json);
      this.drop(key);
      if (bytes > this.maxBytes) continue;
      this.held.set(key, { json, bytes });
      this.heldBytes += bytes;
    }
    for (const [key] of this.held) {
      if (this.held.size <= this.maxItems && this.heldBytes <= this.maxBytes) break;
      this.drop(key);
    }
  }

  /** A copy of the item `id` names in `scope`, now the most recently used; undefined when none is held there. */
  get(id: string, scope = ''): Record<string, unknown> | undefined {
    const key = scoped(scope, id);
    const entry = this.held.get(key);
    if (entry === undefined) return undefined;
    this.held.delete(key);
    this.held.set(key, entry);
    return JSON.parse(entry.json) as Record<string, unknown>;
  }

  private drop(key: string): void {
    const entry = this.held.get(key);
    if (entry === undefined) return;
    this.held.delete(key);
    this.heldBytes -= entry.bytes;
  }
}

/** The key an item is held under: its scope's and its id. */
const scoped = (scope: string, id: string) => `${scope}\0${id}`;
