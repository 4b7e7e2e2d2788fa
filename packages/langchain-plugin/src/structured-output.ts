/**
 * `withStructuredOutput` for reasoner chat models, with every method constrained token by token by core's
 * constraint stage: `jsonSchema` (the default, as ChatOllama) and `jsonMode` make the reply JSON (valid against
 * the schema, or any object), `functionCalling` forces one call of a tool whose arguments are the schema.
 * Zod schemas are validated again by LangChain's parsers and come back typed. A reply cut off by the token limit
 * fails to parse (`OutputParserException`; `includeRaw` gives `parsed: null`), whichever the method.
 */
import type { BaseLanguageModelCallOptions, BaseLanguageModelInput, StructuredOutputMethodOptions } from '@langchain/core/language_models/base';
import { isAIMessage, type BaseMessage } from '@langchain/core/messages';
import { OutputParserException } from '@langchain/core/output_parsers';
import { JsonOutputKeyToolsParser } from '@langchain/core/output_parsers/openai_tools';
import type { ChatGeneration } from '@langchain/core/outputs';
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

/** What tracers are told of a structured call (LangChain's call option, which LangSmith reads). */
type TracedFormat = NonNullable<BaseLanguageModelCallOptions['ls_structured_output_format']>;

/** What the structured-output pipeline needs of the model. */
export interface StructuredModel {
  withConfig(config: { responseFormat: ResponseFormat; ls_structured_output_format: TracedFormat }): Runnable<BaseLanguageModelInput, BaseMessage>;
  bindTools(tools: unknown[], kwargs: { tool_choice: string; ls_structured_output_format: TracedFormat }): Runnable<BaseLanguageModelInput, BaseMessage>;
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
  // As ChatOpenAI and ChatOllama bind it: tracers (LangSmith) see the method and schema in the call's options.
  const traced: TracedFormat = { kwargs: { method }, schema: asJsonSchema as TracedFormat['schema'] };
  if (method === 'functionCalling') {
    const name = config.name ?? (typeof asJsonSchema.title === 'string' ? asJsonSchema.title : 'extract');
    const description = getSchemaDescription(schema) ?? (asJsonSchema.description as string | undefined) ?? 'Answer in this structure.';
    const tool = { type: 'function', function: { name, description, parameters: asJsonSchema } };
    const llm = model.bindTools([tool], { tool_choice: name, ls_structured_output_format: traced });
    return assembleStructuredOutputPipeline(llm, createFunctionCallingParser(schema, name, ForcedCallParser) as never, includeRaw, runName);
  }
  const responseFormat: ResponseFormat = method === 'jsonMode' ? { type: 'json_object' } : { type: 'json_schema', schema: asJsonSchema };
  return assembleStructuredOutputPipeline(model.withConfig({ responseFormat, ls_structured_output_format: traced }), createContentParser(schema) as never, includeRaw, runName);
}

/**
 * LangChain's parser of the forced call, except that a reply without a valid call of the tool because the token limit
 * cut it (the call invalid, its arguments not whole, or not written yet) fails as a cut-off JSON answer does, where
 * LangChain's would find no call and give undefined.
 */
class ForcedCallParser extends JsonOutputKeyToolsParser {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- LangChain's own signature
  override async parseResult(generations: ChatGeneration[]): Promise<any> {
    const message = generations[0]?.message;
    if (message && isAIMessage(message) && !message.tool_calls?.some((c) => c.name === this.keyName)) {
      const invalid = message.invalid_tool_calls?.find((c) => c.name === this.keyName);
      if (invalid) throw new OutputParserException(`the call of ${this.keyName} is invalid (${invalid.error ?? 'no error given'}): its arguments are ${JSON.stringify(invalid.args)}`, invalid.args);
      if (message.response_metadata?.finish_reason === 'length') throw new OutputParserException(`the reply was cut off by the token limit before its call of ${this.keyName}`, message.text);
    }
    return super.parseResult(generations);
  }
}
