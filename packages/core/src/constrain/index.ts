export { ConstraintError, type Constraint, type ConstraintFactory, type JsonSchema, type ResponseFormat, type ThoughtFirst, type ToolChoice, type ToolSpec } from './types.js';
export { grammarVocabulary, type GrammarVocabulary } from './vocabulary.js';
export { XGrammarFactory } from './xgrammar-factory.js';
export { applyBitmask } from '../sampling/bitmask.js';
export { pickAccepted } from './timing.js';
export { prepareJsonSchema } from './json-schema.js';
