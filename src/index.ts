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
export type {StreamGuardOptions, StreamSessionOptions, StreamModerationReport, StreamLabels} from "./stream/StreamGuard.js";
export {StreamSession} from "./stream/StreamSession.js";
export {UnsafeContentError} from "./stream/UnsafeContentError.js";
export type {MonitorChunk, MonitorOptions} from "./stream/monitor.js";
export {IncrementalTokenizer} from "./stream/IncrementalTokenizer.js";
export {resolvePolicy} from "./stream/DecisionRule.js";
export type {RiskLevel, Verdict, TokenVerdict, Flag, ResponseReport, PolicyOption, CustomPolicy} from "./stream/types.js";
