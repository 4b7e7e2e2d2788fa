/**
 * Fill-in-the-middle (FIM): code models (Qwen2.5-Coder, StarCoder 2, Granite Code, DeepSeek Coder, CodeLlama,
 * CodeGemma) complete the code between a prefix and a suffix when the prompt is written
 * `[BOS] <prefix token> prefix <suffix token> suffix <middle token>`, as llama.cpp's server and node-llama-cpp write it.
 */

/** The ids of a vocabulary's FIM tokens. */
export interface FimTokens {
  /** Goes before the code before the insertion. */
  prefix: number;
  /** Goes before the code after it. */
  suffix: number;
  /** Ends the prompt: the model writes the middle next. */
  middle: number;
}

/** The token texts llama.cpp recognizes as each FIM token (src/llama-vocab.cpp), in its order. */
const FIM_TEXTS: Readonly<Record<keyof FimTokens, readonly string[]>> = {
  prefix: ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>'],
  suffix: ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>'],
  middle: ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>'],
};

/**
 * Tokens that end a FIM completion besides the end of text, as llama.cpp adds them to its end-of-generation set: the
 * FIM padding, the repository-name and the file-separator tokens.
 */
export const FIM_END_TEXTS: readonly string[] = ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>', '<|file_sep|>'];

/**
 * The FIM tokens of a vocabulary: those `named` (the texts a GGUF named by id, kept in tokenizer_config.json's
 * `fim_tokens`), else the first of llama.cpp's texts it holds; undefined unless all three are found.
 */
export function fimTokensOf(tokenId: (text: string) => number | undefined, named?: unknown): FimTokens | undefined {
  const given = (named ?? {}) as Partial<Record<keyof FimTokens, unknown>>;
  const find = (kind: keyof FimTokens): number | undefined => {
    const text = given[kind];
    if (typeof text === 'string') return tokenId(text);
    for (const t of FIM_TEXTS[kind]) {
      const id = tokenId(t);
      if (id !== undefined) return id;
    }
    return undefined;
  };
  const [prefix, suffix, middle] = [find('prefix'), find('suffix'), find('middle')];
  return prefix === undefined || suffix === undefined || middle === undefined ? undefined : { prefix, suffix, middle };
}

/** The FIM prompt of a prefix's and a suffix's ids: `[bos] <prefix> prefix <suffix> suffix <middle>`. */
export function fimPromptIds(fim: FimTokens, prefix: readonly number[], suffix: readonly number[], bos?: number): number[] {
  return [...(bos === undefined ? [] : [bos]), fim.prefix, ...prefix, fim.suffix, ...suffix, fim.middle];
}
