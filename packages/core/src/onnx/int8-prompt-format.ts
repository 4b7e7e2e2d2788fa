/**
 * Bump when `int8PromptGraph` (int8-prompt-graph.ts) changes what it writes: sessions saved of earlier rewrites are
 * then made again. A module of its own, so that a model worker loading a saved rewrite loads no protobuf.
 */
export const INT8_PROMPT_FORMAT = 1;
