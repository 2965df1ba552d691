// The bench's output: the targets checked against the results, and the printed table.

import type {GenResults} from "./genBench.js";
import type {MemoryResult} from "./memoryBench.js";
import type {SessionsResults} from "./sessionsBench.js";
import {mapSummary} from "./stats.js";
import type {Summary} from "./stats.js";
import type {StreamResults} from "./streamBench.js";

/** Where and how a run ran. */
export interface BenchMeta {
    started: string,
    finished: string,
    /** The command line, as typed. */
    command: string,
    size: string,
    quick: boolean,
    plan: {threads: number} & Record<string, unknown>,
    /** Commit, and whether the working tree had changes. */
    source: string,
    machine: {cpu: string, cores: number, memoryBytes: number, platform: string, node: string, loadAverageBefore: number[], loadAverageAfter: number[]},
    runtime: {version: string, backend: string, llamaCpp: object},
    models: object
}

/** The saved JSON file. */
export interface BenchFile {
    meta: BenchMeta,
    results: BenchResults,
    targets: TargetCheck[]
}

/** Everything one run measured (sections skipped with `--only` are absent). */
export interface BenchResults {
    stream?: StreamResults,
    sessions?: SessionsResults,
    gen?: GenResults,
    memory?: MemoryResult[]
}

/** One target of issue 8, checked. */
export interface TargetCheck {
    target: string,
    /** The figure compared (a median, or a ratio of medians). */
    measured: number,
    limit: number,
    /** Whether the median meets the limit. */
    met: boolean,
    /** The spread of the figure over the repetitions, when it is a per-round figure; null otherwise. */
    spread: {min: number, max: number} | null,
    /** When the spread reaches both sides of the limit, the verdict rests on the median alone. */
    borderline: boolean
}

const MiB = 1024 * 1024;
const toMiB = (bytes: number) => bytes / MiB;

/** The headroom over the model files the memory target allows. */
const RSS_HEADROOM_BYTES = 400 * 1000 * 1000;

/**
 * Checks the targets (0.6B q8_0, 2 threads) against what was measured.
 * @returns one check per target whose figure was measured
 */
export function checkTargets(results: BenchResults): TargetCheck[] {
    const checks: TargetCheck[] = [];
    const bySummary = (target: string, summary: Summary, limit: number, direction: "atMost" | "atLeast") => {
        const ok = (value: number) => direction === "atMost" ? value <= limit : value >= limit;
        checks.push({target, measured: summary.median, limit, met: ok(summary.median), spread: {min: summary.min, max: summary.max},
            borderline: ok(summary.min) !== ok(summary.max)});
    };
    const byValue = (target: string, measured: number, limit: number, direction: "atMost" | "atLeast") => {
        checks.push({target, measured, limit, met: direction === "atMost" ? measured <= limit : measured >= limit, spread: null, borderline: false});
    };
    const {stream, sessions, gen, memory} = results;
    for (const {context, layouts} of sessions?.contexts ?? []) {
        const points = layouts["per-sequence"].filter((point) => !point.spread);
        const eight = points.find((point) => point.sessions === 8);
        const sixteen = points.find((point) => point.sessions === 16);
        if (eight != null)
            bySummary(`8 concurrent Stream sessions / one alone ≥ 2.5 (context ${context})`, eight.vsAlone, 2.5, "atLeast");
        if (eight != null && sixteen != null && context >= 800)
            byValue(`16 concurrent Stream sessions / 8 ≥ 1.0, tokens/s (context ${context})`,
                sixteen.tokensPerSecond.median / eight.tokensPerSecond.median, 1.0, "atLeast");
    }
    if (stream != null) {
        bySummary("Stream decode / backbone floor ≤ 1.10", stream.decode.ratios.vsFloor, 1.10, "atMost");
        bySummary("Stream decode / generator ≤ 1.00", stream.decode.ratios.vsGenerator, 1.00, "atMost");
        bySummary("Whole-response scoring / raw prompt eval ≥ 0.95", stream.scoring.ratio, 0.95, "atLeast");
        const {points} = stream.flatness;
        byValue(`Stream per-token cost at ${points[points.length - 1].position} / at ${points[0].position} ≤ 1.5`,
            stream.flatness.lastOverFirst.stream, 1.5, "atMost");
    }
    if (gen != null) {
        const shortest = gen.latency[0];
        bySummary(`Gen score mode ≥ 4× faster than the naive chat call (${shortest.inputTokens}-token input)`, shortest.speedup.score, 4, "atLeast");
        bySummary(`Gen score mode / its floor ≤ 1.10 (${shortest.inputTokens}-token input)`, shortest.vsFloor, 1.10, "atMost");
        gen.throughput.forEach((throughput, i) => {
            if (i > 0 && throughput.parallel >= 8)
                bySummary(`Gen, ${throughput.items} requests at once: parallel ${throughput.parallel} / parallel ${gen.throughput[0].parallel} ≥ 1.0`,
                    gen.throughputGain[i], 1.0, "atLeast");
        });
    }
    for (const result of memory ?? []) {
        // the target is the libraries' own: a q8_0 KV cache is an option that shows what it saves
        if (result.config.engine === "stock" || result.config.cacheTypeK != null || result.config.cacheTypeV != null)
            continue;
        byValue(`Peak RSS ≤ model files + 400 MB: ${result.name} (MB over the files)`, result.overFileBytes.median / 1e6, RSS_HEADROOM_BYTES / 1e6, "atMost");
    }
    return checks;
}

/** Rows of a plain-text table: label, unit, median, spread. */
class Table {
    private readonly lines: string[] = [];

    heading(text: string): void {
        this.lines.push("", text);
    }

    row(label: string, unit: string, summary: Summary | number, digits: number): void {
        const value = typeof summary === "number" ? summary : summary.median;
        const spread = typeof summary === "number" ? "" : `${summary.min.toFixed(digits)}–${summary.max.toFixed(digits)}`;
        this.lines.push(`  ${label.padEnd(62)} ${unit.padEnd(9)} ${value.toFixed(digits).padStart(9)}  ${spread}`);
    }

    text(line: string): void {
        this.lines.push(`  ${line}`);
    }

    toString(): string {
        return this.lines.join("\n");
    }
}

/** The table's first line: what ran, where, when, and how loaded the machine was (1-minute load average). */
function reportTitle({size, plan, machine, runtime, started}: BenchMeta): string {
    return `qwenguard bench: ${size} q8_0, ${plan.threads} threads, ${machine.cpu} (${machine.cores} cores), ${runtime.backend}, ` +
        `${started.slice(0, 16)}Z, load average ${machine.loadAverageBefore[0].toFixed(1)} → ${machine.loadAverageAfter[0].toFixed(1)}`;
}

/**
 * The printed table: every figure as median and min–max over the repetitions, then the targets.
 * @param file - a run's metadata, results and target checks
 */
export function formatReport({meta, results, targets}: BenchFile): string {
    const table = new Table();
    table.text(reportTitle(meta));
    table.text(`${"".padEnd(62)} ${"unit".padEnd(9)} ${"median".padStart(9)}  min–max`);
    const {stream, sessions, gen, memory} = results;
    if (stream != null) {
        const {decode, scoring, flatness, nativeHead} = stream;
        table.heading(`1. Stream decode, one token at a time, at context ${decode.context} (${decode.stepTokens} tokens per round, ` +
            "trials interleaved token by token; per round the median token)");
        table.row("StreamSession.pushTokens([id])", "ms/token", decode.stream, 2);
        table.row("  engine: addon evaluate, output row + response head", "ms/token", decode.engine.head, 2);
        table.row("  engine: addon evaluate, output row, no head", "ms/token", decode.engine.outputRow, 2);
        table.row("  engine: addon evaluate, no output (Stream backbone floor)", "ms/token", decode.engine.noOutput, 2);
        table.row("stock backbone floor: evaluateWithoutGeneratingNewTokens", "ms/token", decode.floor, 2);
        table.row("stock generator: greedy evaluate(), one token per step", "ms/token", decode.generator, 2);
        table.row("Stream / floor", "×", decode.ratios.vsFloor, 3);
        table.row("Stream / generator", "×", decode.ratios.vsGenerator, 3);
        table.row("cost of the output row (final-norm row, hidden copy)", "ms/token", decode.costs.outputRow, 2);
        table.row("cost of the head (in process: head − output row)", "ms/token", decode.costs.head, 2);
        table.row("cost of the JS API (pushTokens − engine)", "ms/token", decode.costs.api, 2);
        table.row("Stream backbone floor − stock floor", "ms/token", decode.costs.streamBackboneVsStock, 2);

        table.heading(`2. Whole-response scoring, ${scoring.tokens} tokens at once`);
        table.row("StreamSession.pushTokens(all): every position scored", "tokens/s", scoring.stream, 1);
        table.row("stock raw prompt eval: evaluateWithoutGeneratingNewTokens(all)", "tokens/s", scoring.raw, 1);
        table.row("Stream / raw", "×", scoring.ratio, 3);

        table.heading("3. Flatness: per-token cost by context position (one token at a time, interleaved token by token)");
        for (const point of flatness.points) {
            table.row(`Stream at ${point.position}`, "ms/token", point.stream, 2);
            table.row(`  stock floor at ${point.position}`, "ms/token", point.floor, 2);
            table.row(`  stock floor at ${point.position}, flash attention off`, "ms/token", point.floorNoFlash, 2);
        }
        const first = flatness.points[0].position;
        const last = flatness.points[flatness.points.length - 1].position;
        table.row(`Stream ${last} / ${first}`, "×", flatness.lastOverFirst.stream, 3);
        table.row(`stock floor ${last} / ${first}`, "×", flatness.lastOverFirst.floor, 3);
        table.row(`stock floor ${last} / ${first}, flash attention off`, "×", flatness.lastOverFirst.floorNoFlash, 3);

        table.heading("4. Head cost");
        if (nativeHead == null) {
            table.text("native tool build/qg_stream_run not built: run `npm run build:addon`");
        } else {
            table.text(`${nativeHead.tool} --bench ${nativeHead.steps} at context ${nativeHead.context} (native core timers, no Node)`);
            table.row("native: evaluate per token", "ms/token", nativeHead.msPerToken, 2);
            table.row("native: llama_decode + hidden-state copy", "ms/token", nativeHead.decodeMs, 2);
            table.row("native: head graph", "ms/token", nativeHead.headMs, 3);
            table.row("native: head share of a token", "%", nativeHead.headPercent, 2);
        }
    }
    if (sessions != null) {
        table.heading(`4b. Concurrent Stream sessions: S sessions push one token each per step (one evaluate); the per-session ` +
            `context holds ${sessions.held.perSequence} sessions (${sessions.cells.perSequence} cells each), the shared pool ${sessions.held.shared}`);
        for (const {context, layouts, ceiling, perSequenceVsShared, quantized} of sessions.contexts) {
            for (const point of ceiling ?? []) {
                table.row(`context ${context}, ceiling: ONE session fed ${point.tokens} tokens a step, all scored`, "tokens/s", point.tokensPerSecond, 1);
                table.row("  / one session alone", "×", point.vsAlone, 2);
            }
            for (const [layout, label] of [["per-sequence", "KV stream per session"], ["shared", "one shared KV pool"]] as const)
                for (const point of layouts[layout]) {
                    const what = `context ${context}, ${label}, ${point.sessions} session${point.sessions > 1 ? "s" : ""}${point.spread ? " (ids spread)" : ""}`;
                    table.row(what, "tokens/s", point.tokensPerSecond, 1);
                    table.row("  / one session alone", "×", point.vsAlone, 2);
                }
            for (const {sessions: count, ratio} of perSequenceVsShared)
                table.row(`context ${context}, ${count} session${count > 1 ? "s" : ""}: per-session streams / shared pool`, "×", ratio, 2);
            for (const point of quantized ?? []) {
                table.row(`context ${context}, KV stream per session, ${point.cache}, ${point.sessions} session${point.sessions > 1 ? "s" : ""}`,
                    "tokens/s", point.tokensPerSecond, 1);
                table.row("  / one session alone in that cache", "×", point.vsAlone, 2);
                table.row("  / the same in f16 without flash attention", "×", point.vsF16, 2);
            }
        }
    }
    if (gen != null) {
        table.heading("5. Gen (prompt moderation)");
        for (const latency of gen.latency) {
            table.text(`${latency.inputTokens}-token input: Gen prompt ${latency.promptTokens} tokens, ${latency.cachedTokens} reused from the KV cache`);
            table.row(`  score mode`, "ms", latency.score, 1);
            table.row(`  generate mode (${latency.generateAnswerTokens} answer tokens)`, "ms", latency.generate, 1);
            table.row(`  naive chat call (whole prompt, ${latency.naiveAnswerTokens} greedy tokens)`, "ms", latency.naive, 1);
            table.row("  naive / score", "×", latency.speedup.score, 2);
            table.row("  naive / generate", "×", latency.speedup.generate, 2);
            table.row("  floor: the same uncached tokens and steps fed to the stock backbone", "ms", latency.floor, 1);
            table.row("  score / floor", "×", latency.vsFloor, 2);
        }
        for (const reuse of gen.prefixReuse) {
            table.row(`prefix reuse, ${reuse.inputTokens}-token input: first request on a fresh GenGuard`, "ms", reuse.cold, 1);
            table.row(`  next request (template prefix cached)`, "ms", reuse.warm, 1);
            table.row(`  gain`, "×", reuse.gain, 2);
        }
        gen.throughput.forEach((throughput, i) => {
            table.row(`throughput, score mode, ${throughput.items} requests at once, parallel ${throughput.parallel}`, "items/s", throughput.itemsPerSecond, 2);
            if (i > 0)
                table.row(`  parallel ${throughput.parallel} / parallel ${gen.throughput[0].parallel}`, "×", gen.throughputGain[i], 2);
        });
    }
    if (memory != null) {
        table.heading("6. Memory and start-up (each in its own process)");
        for (const result of memory) {
            table.text(`${result.name}: files ${(result.fileBytes / MiB).toFixed(0)} MiB, KV ${result.kvCells} cells = ${(result.kvBytes / MiB).toFixed(0)} MiB`);
            table.row("  peak RSS", "MiB", mapSummary(result.maxRssBytes, toMiB), 0);
            table.row("  peak RSS − model files", "MiB", mapSummary(result.overFileBytes, toMiB), 0);
            table.row("  spawn → first verdict", "ms", result.startupMs, 0);
        }
    }
    if (targets.length > 0) {
        table.heading("Targets (issues 8 and 14)");
        for (const check of targets) {
            const spread = check.spread == null ? "" : ` (${check.spread.min.toFixed(3)}–${check.spread.max.toFixed(3)})`;
            table.text(`${check.met ? "met   " : "MISSED"} ${check.target}: ${check.measured.toFixed(3)}${spread}${check.borderline ? " borderline" : ""}`);
        }
    }
    return table.toString().replace(/^\n/, "");
}

