// The public API of qwenguard: everything a user may import is exported here.
export {loadLlamaRuntime} from "./native/loadAddon.js";
export type {GpuOption, LlamaRuntime} from "./native/loadAddon.js";
export {getRuntimeInfo, describeBackend, packageVersion} from "./native/runtimeInfo.js";
export type {RuntimeInfo} from "./native/runtimeInfo.js";
export {addonBuildState, ensureAddonBuilt} from "./native/addonBuild.js";
export type {AddonBuildState, EnsureAddonOptions} from "./native/addonBuild.js";
export type {AddonBuildInfo, AddonDevice} from "./native/AddonTypes.js";
export type {Message} from "./conversation/messages.js";
export {StreamGuard} from "./stream/StreamGuard.js";
export type {
    StreamGuardOptions, StreamGuardResolvedOptions, StreamSessionOptions, StreamModerationReport, StreamLabels
} from "./stream/StreamGuard.js";
export {StreamSession} from "./stream/StreamSession.js";
export {UnsafeContentError} from "./stream/UnsafeContentError.js";
export type {MonitorChunk, MonitorOptions} from "./stream/monitor.js";
export {IncrementalTokenizer} from "./stream/IncrementalTokenizer.js";
export {resolvePolicy} from "./stream/DecisionRule.js";
export type {RiskLevel, Verdict, TokenVerdict, Flag, ResponseReport, PolicyOption, CustomPolicy} from "./stream/types.js";
export {quantizeModel, quantizationTypes} from "./quantize/quantizeModel.js";
export type {QuantizationType, QuantizeModelOptions, QuantizeModelResult} from "./quantize/quantizeModel.js";
export {convert, SUPPORTED_ARCHITECTURES} from "../gguf/convert/convert.js";
export type {ConvertOptions} from "../gguf/convert/convert.js";
export type {ConversionResult, OutType} from "../gguf/convert/ModelConverter.js";
export {describeGguf, formatDescription, readGguf, GgufWriter, SafetensorsReader} from "../gguf/index.js";
export type {GgufDescription, GgufFile} from "../gguf/index.js";
export {GenGuard} from "./gen/GenGuard.js";
export type {GenGuardOptions} from "./gen/GenGuard.js";
export type {GenMode, GenModerateOptions, GenUsage, GenVerdict, GenWindows} from "./gen/types.js";
export {resolveGenPolicy} from "./gen/genPolicy.js";
export type {GenPolicyOption, GenThresholdPolicy} from "./gen/genPolicy.js";
export {GEN_PROMPT_CATEGORIES, GEN_RESPONSE_CATEGORIES} from "./gen/genTemplate.js";
export type {GenTarget} from "./gen/genTemplate.js";
export {MalformedAnswerError} from "./gen/parseGenAnswer.js";
export {readGuardVariant} from "./gen/readGuardVariant.js";
export type {GuardVariant} from "./gen/readGuardVariant.js";
export {validateMessages} from "./conversation/messages.js";
export {ContextLimitError} from "./conversation/ContextLimitError.js";
export {Judge} from "./moderation/Judge.js";
export type {JudgeOptions, JudgeResult, JudgeOutcome} from "./moderation/Judge.js";
export {conversationOf} from "./moderation/conversationOf.js";
export {moderateMany} from "./batch/moderateMany.js";
export type {BatchItem, BatchItemResult, ModerateManyOptions} from "./batch/moderateMany.js";
export {moderateFile, BatchRecordError} from "./batch/moderateFile.js";
export type {ModerateFileOptions, BatchProgress, BatchSummary} from "./batch/moderateFile.js";
export type {BatchCounts} from "./batch/BatchTally.js";
export {BatchInputError, readRecords, batchInputFormats} from "./batch/readRecords.js";
export type {BatchInputFormat, CsvColumns, InputRecord, ReadRecordsOptions} from "./batch/readRecords.js";
export {BatchOutputError} from "./batch/batchOutput.js";
export {mergeBatchOutputs} from "./batch/mergeOutputs.js";
export type {MergeSummary} from "./batch/mergeOutputs.js";
export {createServer} from "./server/createServer.js";
export type {CreateServerOptions} from "./server/createServer.js";
export {qwenguardPlugin} from "./server/qwenguardPlugin.js";
export type {QwenguardState} from "./server/qwenguardPlugin.js";
export type {QwenguardServerOptions} from "./server/serverOptions.js";
export type {ServerPolicy} from "./server/serverPolicy.js";
export type {ConversationJudgement} from "./server/GuardService.js";
export {OPENAI_MODERATION_CATEGORIES, QWEN3GUARD_TO_OPENAI} from "./server/openaiCategories.js";
export type {OpenAiModerationCategory} from "./server/openaiCategories.js";
export {guardChatStream, CONTENT_FILTER} from "./openai/guardChatStream.js";
export type {ChatChunkLike, ChatStreamFlag, GuardChatStreamOptions, GuardChatStreamResult} from "./openai/guardChatStream.js";
export {RemoteGuard, RemoteGuardError, RemoteSession} from "./remote/RemoteGuard.js";
export type {RemoteGuardOptions} from "./remote/RemoteGuard.js";
export {streamSessionMonitor, wholeTextMonitor} from "./integrations/ResponseMonitor.js";
export type {MonitorFlag, ResponseMonitor} from "./integrations/ResponseMonitor.js";
export {judgeLast, openMonitor} from "./integrations/guardKinds.js";
export type {AnyGuard, OpenedMonitor} from "./integrations/guardKinds.js";
export {probeModel, assertLoadsSafely, UnloadableModelError} from "./probe/probeModel.js";
export type {ProbeModelOptions, ProbeOutcome} from "./probe/probeModel.js";
export {
    checkLoadable, checkStreamHead, GgufError, GgufVocabularyError, GgufHyperparameterError, GgufModelTensorError, GgufStreamHeadError
} from "../gguf/index.js";
export {pullModel} from "./hub/pullModel.js";
export type {PullEvent, PullModelOptions} from "./hub/pullModel.js";
export {resolveModel} from "./hub/resolveModel.js";
export type {ResolvedModel, ResolveModelOptions} from "./hub/resolveModel.js";
export {modelCacheDir, listCachedModels, removeCachedModel, findCachedModel} from "./hub/modelCache.js";
export type {CachedModel, ModelManifest} from "./hub/modelCache.js";
export {OFFICIAL_MODELS, DEFAULT_MODEL_TYPE, parseModelName, isModelName, ModelNameError} from "./hub/modelNames.js";
export type {ModelSource, OfficialModelName} from "./hub/modelNames.js";
export {hubEnvironment} from "./hub/hubEnvironment.js";
export type {HubEnvironment} from "./hub/hubEnvironment.js";
export {
    PullError, HubAccessError, HubNotFoundError, HubUnreachableError, ModelNotCachedError, NotAGuardModelError, ChecksumMismatchError,
    InsufficientSpaceError
} from "./hub/errors.js";
