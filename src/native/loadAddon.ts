import {createRequire} from "node:module";
import type {Llama, LlamaGpuType} from "node-llama-cpp";
import type {Addon} from "./AddonTypes.js";
import {addonBuildState, addonPath, ensureAddonBuilt} from "./addonBuild.js";

/** Which llama.cpp flavour node-llama-cpp loads: `"auto"` picks CUDA, Vulkan or Metal when present, `false` the CPU. */
export type GpuOption = "auto" | LlamaGpuType;

/** node-llama-cpp's llama.cpp and our addon bound to it: one llama.cpp per process. */
export interface LlamaRuntime {
    llama: Llama,
    addon: Addon
}

let runtime: {gpu: GpuOption, promise: Promise<LlamaRuntime>} | undefined;

/**
 * Loads llama.cpp through node-llama-cpp (which picks the CPU, CUDA, Vulkan or Metal flavour), THEN our addon,
 * whose llama.cpp symbols bind to the copy already in the process. Builds the addon first when it is missing or
 * stale, saying so on stderr. The runtime is loaded once per process; later calls return it.
 * @param options.gpu the flavour to load; `"auto"` by default. Omitted on a later call: whatever is loaded.
 * @throws when a later call names another flavour than the loaded one, or the addon cannot be built or loaded
 */
export function loadLlamaRuntime({gpu}: {gpu?: GpuOption} = {}): Promise<LlamaRuntime> {
    if (runtime != null) {
        if (gpu !== undefined && runtime.gpu !== gpu)
            return Promise.reject(new Error(`Expected the same "gpu" option as the runtime already loaded in this process (${String(runtime.gpu)}) but received ${String(gpu)}`));
        return runtime.promise;
    }
    const promise = load(gpu ?? "auto");
    runtime = {gpu: gpu ?? "auto", promise};
    promise.catch(() => {
        runtime = undefined;
    });
    return promise;
}

async function load(gpu: GpuOption): Promise<LlamaRuntime> {
    // imported here, not at the top: node-llama-cpp takes most of a second to import, which every CLI command and
    // library import would pay before it even reads its options (a usage error, a RemoteGuard client)
    const {getLlama, LlamaLogLevel} = await import("node-llama-cpp");
    let llama: Llama;
    try {
        // build "never": a missing binary is an error to report, not a silent 20-minute llama.cpp compilation.
        llama = await getLlama({gpu, build: "never", logLevel: LlamaLogLevel.error});
    } catch (error) {
        throw new Error(`node-llama-cpp found no working llama.cpp binary for gpu ${JSON.stringify(gpu)} on this machine ` +
            `(${error instanceof Error ? error.message : String(error)}). Try gpu: false, or build one with ` +
            "`npx --no node-llama-cpp source build`.");
    }
    const state = addonBuildState();
    if (state.state !== "ready") {
        process.stderr.write(`qwenguard: ${state.reason}; building it now (a few seconds)\n`);
        await ensureAddonBuilt({log: (line) => process.stderr.write(line + "\n")});
    }
    const require = createRequire(import.meta.url);
    try {
        return {llama, addon: require(addonPath) as Addon};
    } catch (error) {
        throw new Error(`Could not load the native addon ${addonPath}: ${error instanceof Error ? error.message : String(error)}. ` +
            "Rebuild it with `npm run build:addon` in the qwenguard package folder.");
    }
}
