// A mutation fuzz of Hugging Face checkpoints into `convert`: byte edits of the safetensors header, edits of its JSON
// (dtypes, shapes, offsets, a tensor dropped), truncation, and config.json values an attacker would choose. Every
// mutant is converted in-process: the converter must refuse it with one of the project's error classes (a GgufError),
// or write a GGUF that then goes through the pre-flight check and a real load in a child process, as in ggufFuzz.

import {copyFile, mkdir, readFile, readdir, rm, symlink, truncate, writeFile} from "node:fs/promises";
import path from "node:path";
import {GgufError, GgufValueType, checkLoadable, checkStreamHead, readGguf} from "../../gguf/index.js";
import {convert} from "../../gguf/convert/convert.js";
import {ModelProber} from "../../src/probe/probeModel.js";
import {describeError, emptyCounts, isFailure, loadCase} from "./ggufFuzz.js";
import type {FuzzCase, FuzzReport} from "./ggufFuzz.js";
import {SeededRandom} from "./SeededRandom.js";

/** How long one conversion of a tiny checkpoint may take before it counts as hung. */
const CONVERT_TIMEOUT_MS = 60_000;
const WEIGHTS = "model.safetensors";

/** Options of {@link fuzzCheckpoint}. */
export interface CheckpointFuzzOptions {
    mutants: number,
    seed: number,
    /** Where the mutant checkpoints and their conversions are written (a folder per worker). */
    dir: string,
    /** Conversions at once. */
    parallel?: number,
    onCase?: (fuzzCase: FuzzCase) => void
}

interface Plan {
    description: string,
    /** Writes the mutant's changed files into `target` (the others are links to the original). */
    write: (source: string, target: string) => Promise<void>
}

/**
 * Mutates a single-file safetensors checkpoint `mutants` times and converts every mutant. "internal" (an error that is
 * not one of the project's: a TypeError, a RangeError…), "crashed" and "hung" are what must never happen.
 * @param hfDir - a valid checkpoint folder with one model.safetensors
 */
export async function fuzzCheckpoint(hfDir: string, options: CheckpointFuzzOptions): Promise<FuzzReport> {
    const started = performance.now();
    const weights = await readFile(path.join(hfDir, WEIGHTS));
    const headerLength = Number(weights.readBigUInt64LE(0));
    const header = JSON.parse(weights.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, {dtype: string, shape: number[], data_offsets: number[]}>;
    const config = JSON.parse(await readFile(path.join(hfDir, "config.json"), "utf8")) as Record<string, unknown>;
    const random = new SeededRandom(options.seed);
    const plans = Array.from({length: options.mutants}, () => planMutation(random, weights, headerLength, header, config));
    const counts = emptyCounts();
    const crashes: FuzzCase[] = [];
    const files = await readdir(hfDir);
    let next = 0;
    const worker = async (lane: number) => {
        const laneDir = path.join(options.dir, `checkpoint-${lane}`);
        const prober = new ModelProber();
        try {
            while (next < plans.length) {
                const index = next++;
                const plan = plans[index];
                await rm(laneDir, {recursive: true, force: true});
                await mkdir(path.join(laneDir, "in"), {recursive: true});
                for (const file of files)
                    await symlink(path.join(hfDir, file), path.join(laneDir, "in", file));
                await plan.write(hfDir, path.join(laneDir, "in"));
                const fuzzCase = await judgeCheckpoint(index, plan.description, laneDir, prober);
                counts[fuzzCase.stage]++;
                if (isFailure(fuzzCase.stage))
                    crashes.push(fuzzCase);
                options.onCase?.(fuzzCase);
            }
        } finally {
            await prober.close();
            await rm(laneDir, {recursive: true, force: true});
        }
    };
    await Promise.all(Array.from({length: options.parallel ?? 2}, (_, lane) => worker(lane)));
    return {mutants: options.mutants, counts, abortsPrevented: 0, crashes, seconds: (performance.now() - started) / 1000};
}

async function judgeCheckpoint(index: number, mutation: string, laneDir: string, prober: ModelProber): Promise<FuzzCase> {
    const outFile = path.join(laneDir, "out.gguf");
    let timer: NodeJS.Timeout | undefined;
    try {
        const timeout = new Promise<"hung">((resolve) => (timer = setTimeout(() => resolve("hung"), CONVERT_TIMEOUT_MS)));
        const converted = await Promise.race([convert(path.join(laneDir, "in"), {outFile, outType: "f16", name: "mutant"}), timeout]);
        if (converted === "hung")
            return {index, mutation, stage: "hung", message: `convert took over ${CONVERT_TIMEOUT_MS} ms`};
    } catch (error) {
        return {index, mutation, stage: error instanceof GgufError ? "converter" : "internal", message: describeError(error)};
    } finally {
        clearTimeout(timer);
    }
    try {
        const gguf = await readGguf(outFile);
        checkLoadable(gguf);
        const head = outFile.replace(/\.gguf$/, ".head.gguf");
        if (gguf.metadata.find("qwen3guard.variant", GgufValueType.STRING) === "stream-backbone")
            checkStreamHead(gguf, await readGguf(head));
    } catch (error) {
        // the converter wrote what the check refuses: it should have refused the checkpoint itself
        return {index, mutation, stage: error instanceof GgufError ? "preflight" : "internal", message: describeError(error)};
    }
    return loadCase(index, mutation, outFile, prober);
}

/** Values an attacker would put in a numeric config key. */
const CONFIG_VALUES: readonly unknown[] = [0, -1, 1, 3, 2.5, 1e9, 2 ** 53, "64", null, true, [], {}];
const DTYPES = ["F32", "F16", "BF16", "I64", "F8_E4M3", "BOOL", "Q4", ""];

function planMutation(random: SeededRandom, weights: Buffer, headerLength: number, header: Record<string, {dtype: string, shape: number[], data_offsets: number[]}>,
    config: Record<string, unknown>): Plan {
    const kind = random.int(10);
    const names = Object.keys(header).filter((name) => name !== "__metadata__");
    // the bytes are built when the mutant is written: plans are drawn up front, and a copy of the weights in each
    // held thousands of them in memory at once (the 7,500-mutant run ran out of heap)
    const writeWeights = (bytes: () => Buffer) => async (_source: string, target: string) => {
        await rm(path.join(target, WEIGHTS));
        await writeFile(path.join(target, WEIGHTS), bytes());
    };
    const withHeader = (edited: object): Buffer => {
        const json = Buffer.from(JSON.stringify(edited));
        const length = Buffer.alloc(8);
        length.writeBigUInt64LE(BigInt(json.length));
        return Buffer.concat([length, json, weights.subarray(8 + headerLength)]);
    };
    if (kind < 3) {
        // 1 to 3 byte edits in the length field or the JSON header
        const edits = Array.from({length: 1 + random.int(3)}, () => {
            const width = [1, 4, 8][random.int(3)];
            const offset = random.int(5) === 0 ? 0 : random.int(8 + headerLength - width);
            const value = Buffer.from(Array.from({length: width}, () => [0, 0xff, 0x22, 0x7d, random.int(256)][random.int(5)]));
            return {offset, value};
        });
        const apply = () => {
            const bytes = Buffer.from(weights);
            for (const {offset, value} of edits)
                value.copy(bytes, offset);
            return bytes;
        };
        return {description: `safetensors bytes ${edits.map(({offset, value}) => `@${offset}=${value.toString("hex")}`).join(" ")}`, write: writeWeights(apply)};
    }
    if (kind < 6) {
        const name = names[random.int(names.length)];
        const edited = structuredClone(header);
        const entry = edited[name];
        const choice = random.int(5);
        let description: string;
        if (choice === 0) {
            entry.dtype = DTYPES[random.int(DTYPES.length)];
            description = `${name} dtype ${entry.dtype}`;
        } else if (choice === 1) {
            const shapes = [[], [0], [...entry.shape, 1], entry.shape.slice(1), entry.shape.map((dim) => dim * 2), [-1, ...entry.shape.slice(1)], [2 ** 40]];
            entry.shape = shapes[random.int(shapes.length)];
            description = `${name} shape [${entry.shape.join(", ")}]`;
        } else if (choice === 2) {
            const [begin, end] = entry.data_offsets;
            const offsets = [[end, begin], [begin, end + 2], [0, end - begin], [begin, weights.length * 2], [begin - 1, end - 1], [-8, end]];
            entry.data_offsets = offsets[random.int(offsets.length)];
            description = `${name} data_offsets [${entry.data_offsets.join(", ")}]`;
        } else if (choice === 3) {
            delete edited[name];
            description = `${name} removed`;
        } else {
            const other = names[random.int(names.length)];
            [edited[name], edited[other]] = [edited[other], edited[name]];
            description = `${name} and ${other} swapped`;
        }
        return {description: `safetensors header: ${description}`, write: writeWeights(() => withHeader(edited))};
    }
    if (kind < 9) {
        const keys = Object.keys(config);
        const key = keys[random.int(keys.length)];
        const edited: Record<string, unknown> = {...config};
        let description: string;
        if (random.int(6) === 0) {
            delete edited[key];
            description = `config.json without ${key}`;
        } else {
            edited[key] = CONFIG_VALUES[random.int(CONFIG_VALUES.length)];
            description = `config.json ${key} = ${JSON.stringify(edited[key])} (was ${JSON.stringify(config[key])})`;
        }
        return {description, write: async (_source, target) => {
            await rm(path.join(target, "config.json"));
            await writeFile(path.join(target, "config.json"), JSON.stringify(edited, null, 2));
        }};
    }
    const at = random.int(weights.length);
    return {description: `safetensors truncated at ${at} of ${weights.length}`, write: async (source, target) => {
        await rm(path.join(target, WEIGHTS));
        await copyFile(path.join(source, WEIGHTS), path.join(target, WEIGHTS));
        await truncate(path.join(target, WEIGHTS), at);
    }};
}
