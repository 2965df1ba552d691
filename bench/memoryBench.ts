// Memory and start-up (issue 8, item 6): each configuration runs in its own child process (memoryWorker.ts), so its
// peak RSS is its own; start-up is the time from spawning the process to its first verdict.

import {spawn} from "node:child_process";
import {statSync} from "node:fs";
import path from "node:path";
import {createInterface} from "node:readline";
import {fileURLToPath} from "node:url";
import {GgmlType, GgufValueType, readGguf, tensorByteSize} from "../gguf/index.js";
import type {KvCacheType} from "../src/native/AddonTypes.js";
import type {DoneEvent, FirstVerdictEvent, MemoryWorkerConfig} from "./memoryWorker.js";
import {summarize} from "./stats.js";
import type {Summary} from "./stats.js";

/** One configuration of the memory figure. */
export interface MemoryCase {
    /** How the table names it. */
    name: string,
    config: MemoryWorkerConfig
}

export interface MemoryResult {
    name: string,
    config: MemoryWorkerConfig,
    /** The model file(s) the configuration loads (backbone + head for Stream). */
    fileBytes: number,
    /** Peak RSS of the process. */
    maxRssBytes: Summary,
    /** Peak RSS minus the model files. */
    overFileBytes: Summary,
    /** KV cells the configuration allocates, and their bytes (K and V of every layer, in the configuration's types). */
    kvCells: number,
    kvBytes: number,
    /** From spawning the process to the first verdict line, as the parent sees it. */
    startupMs: Summary,
    /** The same inside the child: ms from its process start to the first verdict. */
    firstVerdictUptimeMs: Summary,
    workTokens: number
}

const workerPath = path.join(path.dirname(fileURLToPath(import.meta.url)), "memoryWorker.js");

/**
 * Runs every case `runs` times, round-robin, one child process at a time.
 * @returns one result per case
 * @throws when a worker fails
 */
export async function runMemoryBench(cases: readonly MemoryCase[], runs: number, log: (line: string) => void): Promise<MemoryResult[]> {
    const samples = cases.map(() => [] as Array<{startupMs: number, first: FirstVerdictEvent, done: DoneEvent}>);
    for (let run = 0; run < runs; run++) {
        for (const [i, memoryCase] of cases.entries()) {
            samples[i].push(await runWorker(memoryCase.config));
            log(`memory: ${memoryCase.name} run ${run + 1}/${runs}: ${(samples[i][run].done.maxRssKiB / 1024).toFixed(0)} MiB peak`);
        }
    }
    return Promise.all(cases.map(async ({name, config}, i) => {
        const fileBytes = statSync(config.model).size + (config.head != null ? statSync(config.head).size : 0);
        const rss = samples[i].map(({done}) => done.maxRssKiB * 1024);
        const kvCells = samples[i][0].done.kvCells;
        return {
            name, config, fileBytes,
            maxRssBytes: summarize(rss),
            overFileBytes: summarize(rss.map((bytes) => bytes - fileBytes)),
            kvCells,
            kvBytes: kvCells * await kvBytesPerCell(config),
            startupMs: summarize(samples[i].map(({startupMs}) => startupMs)),
            firstVerdictUptimeMs: summarize(samples[i].map(({first}) => first.uptimeMs)),
            workTokens: samples[i][0].done.workTokens
        };
    }));
}

/** Bytes of one KV cell: K and V for every layer's KV heads, in f16 (llama.cpp's default) or q8_0. */
async function kvBytesPerCell(config: MemoryWorkerConfig): Promise<number> {
    const {metadata} = await readGguf(config.model);
    const arch = metadata.find("general.architecture", GgufValueType.STRING);
    const number = (key: string) => metadata.find(`${arch}.${key}`, GgufValueType.UINT32) ?? 0;
    // a layer's keys (or values) of one cell are one row of head_count_kv × the head width
    const bytes = (type: KvCacheType | undefined, width: number) => number("block_count") *
        tensorByteSize(type === "q8_0" ? GgmlType.Q8_0 : GgmlType.F16, [number("attention.head_count_kv") * width]);
    const keyLength = number("attention.key_length");
    return bytes(config.cacheTypeK, keyLength) + bytes(config.cacheTypeV, number("attention.value_length") || keyLength);
}

/** Spawns one worker and collects its two events. */
function runWorker(config: MemoryWorkerConfig): Promise<{startupMs: number, first: FirstVerdictEvent, done: DoneEvent}> {
    return new Promise((resolve, reject) => {
        const started = performance.now();
        const child = spawn(process.execPath, [workerPath, JSON.stringify(config)], {stdio: ["ignore", "pipe", "pipe"]});
        let startupMs = 0;
        let first: FirstVerdictEvent | undefined;
        let done: DoneEvent | undefined;
        let stderr = "";
        child.stderr.on("data", (chunk: Buffer) => {
            stderr += chunk.toString();
        });
        createInterface({input: child.stdout}).on("line", (line) => {
            const event = JSON.parse(line) as FirstVerdictEvent | DoneEvent;
            if (event.event === "first") {
                startupMs = performance.now() - started;
                first = event;
            } else {
                done = event;
            }
        });
        child.on("error", reject);
        child.on("close", (code) => {
            if (code === 0 && first != null && done != null)
                resolve({startupMs, first, done});
            else
                reject(new Error(`The memory worker (${config.engine}, ${config.model}) exited with ${code}: ${stderr.slice(-2000)}`));
        });
    });
}
