/** Where a tag may be starting at the end of streamed text (the splitters hold such text back). */

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
export function partialTagAt(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}
