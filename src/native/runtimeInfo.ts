import {readFileSync} from "node:fs";
import path from "node:path";
import type {AddonBuildInfo, AddonDevice} from "./AddonTypes.js";
import {packageRoot} from "./addonBuild.js";
import {loadLlamaRuntime} from "./loadAddon.js";
import type {GpuOption} from "./loadAddon.js";

/** What runs underneath: our version, the llama.cpp release and the compute backend, as the addon reports them. */
export interface RuntimeInfo {
    /** qwenguard's package version. */
    version: string,
    llamaCpp: AddonBuildInfo,
    /** e.g. `CPU (AVX2, FMA, F16C)` or `CUDA0 (NVIDIA H100 80GB HBM3)`. */
    backend: string,
    devices: AddonDevice[]
}

/** The CPU features worth naming in a one-line backend description, best first. */
const namedCpuFeatures = ["AVX512", "AVX512_BF16", "AVX512_VNNI", "AMX_INT8", "AVX_VNNI", "AVX2", "AVX", "FMA", "F16C", "SSE3", "NEON", "ARM_FMA", "DOTPROD", "SVE", "SME", "RVV"];

/** The package version from package.json. */
export function packageVersion(): string {
    return (JSON.parse(readFileSync(path.join(packageRoot, "package.json"), "utf8")) as {version: string}).version;
}

/**
 * Describes the loaded runtime (loads it first when needed).
 * @param options.gpu the llama.cpp flavour, as for {@link loadLlamaRuntime}
 */
export async function getRuntimeInfo(options: {gpu?: GpuOption} = {}): Promise<RuntimeInfo> {
    const {addon} = await loadLlamaRuntime(options);
    const devices = addon.getDevices();
    return {version: packageVersion(), llamaCpp: addon.getBuildInfo(), backend: describeBackend(devices), devices};
}

/** One line naming the device that does the work: the first GPU, else the CPU with its SIMD features. */
export function describeBackend(devices: AddonDevice[]): string {
    const gpu = devices.find((device) => device.type === "gpu" || device.type === "igpu");
    if (gpu != null)
        return `${gpu.name} (${gpu.description})`;
    const cpu = devices.find((device) => device.type === "cpu");
    if (cpu == null)
        return "no compute device";
    const features = namedCpuFeatures.filter((feature) => cpu.features.includes(feature));
    return features.length > 0 ? `CPU (${features.join(", ")})` : "CPU";
}
