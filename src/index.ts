// The public API of qwenguard: everything a user may import is exported here.
export {loadLlamaRuntime} from "./native/loadAddon.js";
export type {GpuOption, LlamaRuntime} from "./native/loadAddon.js";
export {getRuntimeInfo, describeBackend, packageVersion} from "./native/runtimeInfo.js";
export type {RuntimeInfo} from "./native/runtimeInfo.js";
export {addonBuildState, ensureAddonBuilt} from "./native/addonBuild.js";
export type {AddonBuildState, EnsureAddonOptions} from "./native/addonBuild.js";
export type {AddonBuildInfo, AddonDevice} from "./native/AddonTypes.js";
