// A mutation fuzz of model files, as an attacker (or a bad download) would make them: byte edits in the GGUF header,
// truncations, oversized counts, and a few structural edits (swapped tensor names, a repeated token, an hparam
// changed), each file taken through the reader, the pre-flight check and a real load in a child process.

import {copyFile, open, rm, truncate} from "node:fs/promises";
import {GgufError, GgufValueType, checkLoadable, readGguf} from "../../gguf/index.js";
import type {GgufFile, GgufKv} from "../../gguf/index.js";
import {ModelProber} from "../../src/probe/probeModel.js";
import type {ProbeOutcome} from "../../src/probe/probeModel.js";
import {rewriteGguf} from "./ggufRewrite.js";
import type {GgufEdit} from "./ggufRewrite.js";
import {SeededRandom} from "./SeededRandom.js";

/**
 * Where a mutant was stopped, or how its load ended: the GGUF reader, the converter (checkpoints), the pre-flight check,
 * the load. "internal" is an error that is not one of the project's classes (a TypeError…): a bug, like a crash.
 */
export type FuzzStage = "reader" | "converter" | "internal" | "preflight" | ProbeOutcome["outcome"];

/** One mutant's story. */
export interface FuzzCase {
    index: number,
    mutation: string,
    stage: FuzzStage,
    /** The error or llama.cpp's message. */
    message: string,
    /** With `raw`: how llama.cpp alone (no pre-flight check) fared on a mutant the check refused. */
    raw?: ProbeOutcome["outcome"]
}

/** What a fuzz run found. */
export interface FuzzReport {
    mutants: number,
    counts: Record<FuzzStage, number>,
    /** Mutants the pre-flight check refused that llama.cpp alone aborts on (with `raw`). */
    abortsPrevented: number,
    /** The mutants that ended in a failure ({@link isFailure}). */
    crashes: FuzzCase[],
    seconds: number
}

/** Options of {@link fuzzModel}. */
export interface FuzzOptions {
    mutants: number,
    seed: number,
    /** Where the mutants are written (one file per worker, rewritten for each mutant). */
    dir: string,
    /** Child processes at once. */
    parallel?: number,
    /** Also load the mutants the pre-flight check refused, in llama.cpp alone, to count the aborts it prevents. */
    raw?: boolean,
    onCase?: (fuzzCase: FuzzCase) => void
}

/** The regions of a header that mutations aim at: its start (counts, general and architecture keys), its end (tensor infos), anywhere. */
interface Regions {
    headerEnd: number,
    fileSize: number
}

/**
 * Mutates a model file `mutants` times and takes every mutant as far as it goes: the GGUF reader, the pre-flight check,
 * then a load and one judgement in a child process. A crash (a signal, or a child that died without reporting) or a
 * hang is what must never happen.
 * @param source - a valid Gen GGUF (or a Stream backbone with its head beside the mutants' folder)
 */
export async function fuzzModel(source: string, options: FuzzOptions): Promise<FuzzReport> {
    const started = performance.now();
    const original = await readGguf(source);
    const regions: Regions = {headerEnd: original.dataOffset, fileSize: original.fileSize};
    const random = new SeededRandom(options.seed);
    const counts = emptyCounts();
    const crashes: FuzzCase[] = [];
    let abortsPrevented = 0;
    // the mutations are drawn up front, in order, so that a seed gives the same run whatever the parallelism
    const plans = Array.from({length: options.mutants}, () => planMutation(random, regions, original));
    let next = 0;
    const worker = async (lane: number) => {
        const file = `${options.dir}/mutant-${lane}.gguf`;
        const prober = new ModelProber(); // one child process per lane, started again after a mutant kills it
        try {
            while (next < plans.length) {
                const index = next++;
                const plan = plans[index];
                await plan.write(source, file);
                const fuzzCase = await judgeMutant(index, plan.description, file, options.raw === true, prober);
                counts[fuzzCase.stage]++;
                if (fuzzCase.raw === "crashed")
                    abortsPrevented++;
                if (isFailure(fuzzCase.stage))
                    crashes.push(fuzzCase);
                options.onCase?.(fuzzCase);
                await rm(file, {force: true});
            }
        } finally {
            await prober.close();
        }
    };
    await Promise.all(Array.from({length: options.parallel ?? 2}, (_, lane) => worker(lane)));
    return {mutants: options.mutants, counts, abortsPrevented, crashes, seconds: (performance.now() - started) / 1000};
}

async function judgeMutant(index: number, mutation: string, file: string, raw: boolean, prober: ModelProber): Promise<FuzzCase> {
    let gguf: GgufFile;
    try {
        gguf = await readGguf(file);
    } catch (error) {
        return {index, mutation, stage: error instanceof GgufError ? "reader" : "internal", message: describeError(error)};
    }
    try {
        checkLoadable(gguf);
    } catch (error) {
        if (!(error instanceof GgufError))
            return {index, mutation, stage: "internal", message: describeError(error)};
        const rawOutcome = raw ? (await prober.probe(file, {raw: true, timeoutMs: 60_000})).outcome : undefined;
        return {index, mutation, stage: "preflight", message: (error as Error).message, ...(rawOutcome != null ? {raw: rawOutcome} : {})};
    }
    return loadCase(index, mutation, file, prober);
}

/** Every stage at 0. */
export function emptyCounts(): Record<FuzzStage, number> {
    return {reader: 0, converter: 0, internal: 0, preflight: 0, loaded: 0, refused: 0, crashed: 0, hung: 0};
}

/** The last stage of a mutant that got through the checks: its load and judgement in the prober's child process. */
export async function loadCase(index: number, mutation: string, file: string, prober: ModelProber): Promise<FuzzCase> {
    const probe = await prober.probe(file, {timeoutMs: 60_000});
    return {index, mutation, stage: probe.outcome, message: probe.outcome === "refused" || probe.outcome === "crashed" ? probe.message : ""};
}

/** What must never happen to a mutant, whatever it holds. */
export function isFailure(stage: FuzzStage): boolean {
    return stage === "internal" || stage === "crashed" || stage === "hung";
}

export function describeError(error: unknown): string {
    return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** A mutation drawn from the seed: how to write the mutant, and what it is. */
interface MutationPlan {
    description: string,
    write: (source: string, target: string) => Promise<void>
}

/** Interesting values for an edit of `width` bytes. */
function editValue(random: SeededRandom, width: number): Buffer {
    const bytes = Buffer.alloc(width);
    const choice = random.int(5);
    if (choice === 0)
        bytes.fill(0xff);
    else if (choice === 1)
        bytes.writeUInt8(1 + random.int(8), 0);
    else if (choice === 2 && width >= 4)
        bytes.writeUInt32LE(0x7fffffff, 0);
    else if (choice !== 3)
        for (let i = 0; i < width; i++)
            bytes[i] = random.int(256);
    return bytes; // choice 3: zeros
}

function planMutation(random: SeededRandom, regions: Regions, original: GgufFile): MutationPlan {
    const kind = random.int(10);
    if (kind < 6) {
        // 1 to 3 edits of 1, 4 or 8 bytes, aimed at the header's start, its end (tensor infos) or anywhere in it
        const edits = Array.from({length: 1 + random.int(3)}, () => {
            const width = [1, 4, 8][random.int(3)];
            const region = random.int(3);
            const span = region === 0 ? Math.min(4096, regions.headerEnd) : region === 1 ? Math.min(8192, regions.headerEnd) : regions.headerEnd;
            const start = region === 1 ? regions.headerEnd - span : 0;
            return {offset: Math.max(0, Math.min(regions.headerEnd - width, start + random.int(span))), value: editValue(random, width)};
        });
        return {
            description: `bytes ${edits.map(({offset, value}) => `@${offset}=${value.toString("hex")}`).join(" ")}`,
            write: async (source, target) => {
                await copyFile(source, target);
                const handle = await open(target, "r+");
                try {
                    for (const {offset, value} of edits)
                        await handle.write(value, 0, value.length, offset);
                } finally {
                    await handle.close();
                }
            }
        };
    }
    if (kind === 6) {
        const at = random.int(regions.fileSize);
        return {description: `truncated at ${at} of ${regions.fileSize}`, write: async (source, target) => {
            await copyFile(source, target);
            await truncate(target, at);
        }};
    }
    if (kind === 7) {
        const field = random.int(2) === 0 ? 8 : 16; // tensor count, KV count
        const value = [0xffffffffn, 1n << 40n, 0xffffffffffffffffn][random.int(3)];
        return {description: `${field === 8 ? "tensor" : "KV"} count ${value}`, write: async (source, target) => {
            await copyFile(source, target);
            const bytes = Buffer.alloc(8);
            bytes.writeBigUInt64LE(value);
            const handle = await open(target, "r+");
            await handle.write(bytes, 0, 8, field);
            await handle.close();
        }};
    }
    return structuralPlan(random, original);
}

/** An edit at the level of keys and tensors: well-formed GGUF, wrong model. */
function structuralPlan(random: SeededRandom, original: GgufFile): MutationPlan {
    const tensors = original.tensors;
    const choice = random.int(3);
    let edit: GgufEdit;
    let description: string;
    if (choice === 0) {
        const a = random.int(tensors.length);
        const b = random.int(tensors.length);
        description = `tensor names ${tensors[a].name} and ${tensors[b].name} swapped`;
        edit = {tensors: (copies) => copies.map((tensor, i) => i === a ? {...tensor, name: tensors[b].name} : i === b ? {...tensor, name: tensors[a].name} : tensor)};
    } else if (choice === 1) {
        const tokens = original.metadata.getStringArray("tokenizer.ggml.tokens");
        const a = random.int(tokens.length);
        const b = random.int(tokens.length);
        description = `token ${b} made equal to token ${a}`;
        edit = {kv: (entries) => void entries.set("tokenizer.ggml.tokens", {type: GgufValueType.ARRAY,
            value: {elementType: GgufValueType.STRING, values: tokens.map((token, i) => i === b ? tokens[a] : token)}})};
    } else {
        const numeric = [...original.metadata.entries].filter(([, kv]) => kv.type === GgufValueType.UINT32 || kv.type === GgufValueType.FLOAT32);
        const [key, kv] = numeric[random.int(numeric.length)];
        const value = [0, 1, 3, (kv.value as number) * 2, (kv.value as number) + 1, 65535][random.int(6)];
        description = `${key} = ${value} (was ${String(kv.value)})`;
        edit = {kv: (entries) => void entries.set(key, {type: kv.type, value} as GgufKv)};
    }
    return {description, write: (source, target) => rewriteGguf(source, target, edit)};
}
