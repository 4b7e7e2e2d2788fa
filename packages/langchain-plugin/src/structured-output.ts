/**
 * `withStructuredOutput` for reasoner chat models, with every method constrained token by token by core's
 * constraint stage: `jsonSchema` (the default, as ChatOllama) and `jsonMode` make the reply JSON (valid against
 * the schema, or any object), `functionCalling` forces one call of a tool whose arguments are the schema.
 * Zod schemas are validated again by LangChain's parsers and come back typed.
 */
import type { BaseLanguageModelInput, StructuredOutputMethodOptions } from '@langchain/core/language_models/base';
import type { BaseMessage } from '@langchain/core/messages';
import type { Runnable } from '@langchain/core/runnables';
import {
  assembleStructuredOutputPipeline,
  createContentParser,
  createFunctionCallingParser,
} from '@langchain/core/language_models/structured_output';
import { toJsonSchema } from '@langchain/core/utils/json_schema';
import { getSchemaDescription, isInteropZodSchema } from '@langchain/core/utils/types';
import { isSerializableSchema } from '@langchain/core/utils/standard_schema';
import { ReasonerOptionsError } from './errors.js';
import type { ResponseFormat } from './core.js';

/** What the structured-output pipeline needs of the model. */
export interface StructuredModel {
  withConfig(config: { responseFormat: ResponseFormat }): Runnable<BaseLanguageModelInput, BaseMessage>;
  bindTools(tools: unknown[], kwargs: { tool_choice: string }): Runnable<BaseLanguageModelInput, BaseMessage>;
}

/** The methods `withStructuredOutput` takes. */
export const STRUCTURED_METHODS = ['jsonSchema', 'functionCalling', 'jsonMode'] as const;

/** Builds the constrained pipeline; `schema` is a zod schema, a standard schema or a JSON Schema object. */
export function structuredOutput(
  model: StructuredModel,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LangChain's own signature
  schema: any,
  config: StructuredOutputMethodOptions<boolean> = {},
): Runnable<BaseLanguageModelInput, unknown> {
  const method = config.method ?? 'jsonSchema';
  if (!STRUCTURED_METHODS.includes(method as never)) {
    throw new ReasonerOptionsError('withStructuredOutput', [{ path: 'method', message: `expected one of ${STRUCTURED_METHODS.join(', ')} (got "${method}")` }]);
  }
  const asJsonSchema = (isInteropZodSchema(schema) || isSerializableSchema(schema) ? toJsonSchema(schema) : schema) as Record<string, unknown>;
  const includeRaw = config.includeRaw === true;
  const runName = includeRaw ? 'StructuredOutputRunnable' : 'StructuredOutput';
  if (method === 'functionCalling') {
    const name = config.name ?? (typeof asJsonSchema.title === 'string' ? asJsonSchema.title : 'extract');
    const description = getSchemaDescription(schema) ?? (asJsonSchema.description as string | undefined) ?? 'Answer in this structure.';
    const tool = { type: 'function', function: { name, description, parameters: asJsonSchema } };
    const llm = model.bindTools([tool], { tool_choice: name });
    return assembleStructuredOutputPipeline(llm, createFunctionCallingParser(schema, name) as never, includeRaw, runName);
  }
  const responseFormat: ResponseFormat = method === 'jsonMode' ? { type: 'json_object' } : { type: 'json_schema', schema: asJsonSchema };
  return assembleStructuredOutputPipeline(model.withConfig({ responseFormat }), createContentParser(schema) as never, includeRaw, runName);
}
