export { ConstraintError, type Constraint, type ConstraintFactory, type JsonSchema, type ResponseFormat, type ThoughtFirst, type ToolChoice, type ToolSpec } from './types.js';
export { grammarVocabulary, type GrammarVocabulary, type VocabularyKind } from './vocabulary.js';
export { XGrammarFactory, TOOL_CALL_BEGIN, TOOL_CALL_END } from './xgrammar-factory.js';
export { applyBitmask } from '../sampling/bitmask.js';
export { grammarTiming, pickAccepted, StageClock } from './timing.js';
export { prepareJsonSchema, SUPPORTED_FORMATS } from './json-schema.js';
