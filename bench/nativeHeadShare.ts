// The head's share of a Stream token as the native core times it: `build/qg_stream_run --bench N` (native/tools/)
// feeds N single tokens after a prompt and times, inside each evaluate, the llama_decode calls (hidden-state copy
// included) and the head graph separately. No Node, no JS API: the engine alone.

import {execFile} from "node:child_process";
import {existsSync} from "node:fs";
import path from "node:path";
import {promisify} from "node:util";
import {summarize} from "./stats.js";
import type {Summary} from "./stats.js";

/** What the tool reports, one sample per run. */
export interface NativeHeadShare {
    /** The tool that ran. */
    tool: string,
    /** Tokens of the prompt before the timed tokens. */
    context: number,
    /** Single tokens timed per run. */
    steps: number,
    /** Wall time per token of the whole evaluate. */
    msPerToken: Summary,
    /** llama_decode per token, hidden-state copy included. */
    decodeMs: Summary,
    /** The head graph per token. */
    headMs: Summary,
    /** head / (decode + head), in percent. */
    headPercent: Summary
}

const BENCH_LINE = /bench: (\d+) single tokens after a context of (\d+): ([\d.]+) ms\/token \(decode ([\d.]+) ms, head ([\d.]+) ms = ([\d.]+)%\)/;

/**
 * Runs `qg_stream_run` `runs` times (one model load each) and summarises its `bench:` line.
 * @param tool - the executable (`build/qg_stream_run`, built with the addon)
 * @param promptText - the rendered prompt (special tokens are parsed by the tool)
 * @returns null when the tool has not been built
 * @throws when the tool fails or prints no bench line
 */
export async function measureNativeHeadShare(tool: string, files: {model: string, head: string}, promptText: string,
    options: {threads: number, contextSize: number, steps: number, runs: number}): Promise<NativeHeadShare | null> {
    if (!existsSync(tool))
        return null;
    const run = promisify(execFile);
    const samples: number[][] = [[], [], [], []];
    let context = 0;
    for (let i = 0; i < options.runs; i++) {
        const {stdout} = await run(tool, [files.model, files.head, "--threads", String(options.threads), "--ctx", String(options.contextSize),
            "--quiet", "--bench", String(options.steps), promptText], {maxBuffer: 1 << 24});
        const match = BENCH_LINE.exec(stdout);
        if (match == null)
            throw new Error(`Expected a "bench:" line from ${tool} but it printed: ${stdout.slice(-500)}`);
        context = Number(match[2]);
        [3, 4, 5, 6].forEach((group, k) => samples[k].push(Number(match[group])));
    }
    const [msPerToken, decodeMs, headMs, headPercent] = samples.map(summarize);
    return {tool: path.basename(tool), context, steps: options.steps, msPerToken, decodeMs, headMs, headPercent};
}
