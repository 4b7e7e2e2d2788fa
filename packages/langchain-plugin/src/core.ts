/** This package's one door into @reasonplug/core: every other module imports core's API through here. */
export { Engine, TextTokenizer, ChatReplySplitter, fusionModes, cutAfterFinalMessage, isHarmonyTemplate, keptTokens, reasoningTagsOf, replyFormat, replyParsing, thinkingBudgetFor, thoughtFirst, toolCallSyntaxOf, toolsRead, toolsShown, formatFieldPath, loadModuleDir, MANIFEST_FILE, nearestName, PLACEMENTS, DTYPE_CHOICES, resolveModelPath, unitLength } from '@reasonplug/core';
export type {
  ChatMessage,
  Dtype,
  EngineOptions,
  FusionMode,
  GenerationResult,
  ModelInfo,
  ParsedToolCall,
  PlacementChoice,
  PromptInput,
  ReplyParsing,
  ResponseFormat,
  SamplingOptions,
  SplitReply,
  StreamOptions,
  ToolCallSyntax,
  ToolChoice,
  ToolsPrompt,
  TransferProgress,
} from '@reasonplug/core';
