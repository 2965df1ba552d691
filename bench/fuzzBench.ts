// `npm run bench:fuzz [-- --mutants 10000] [--seed 1] [--raw] [--quick] [--part cost|fuzz] [--only gguf|checkpoint]`: first the cost of the
// pre-flight check (reading the header and checking it) against loading the same model with GenGuard and StreamGuard
// (which includes it), on the 0.6B shapes (tiny with --quick); then the long fuzz run of model files (the short one
// is in `npm test`): seeded GGUF mutants of the tiny Gen model and of the tiny Stream backbone (60% and 20% of the
// mutants) through the GGUF reader, the pre-flight check and a real load and judgement in child processes, and mutants
// of their Hugging Face checkpoints (15% Gen, 5% Stream) through `convert`, then the same. `--raw` also loads every GGUF
// mutant the pre-flight check refused in llama.cpp alone, counting the aborts the check prevented. The figures that
// matter are "crashed", "hung" and "internal" (an error that is not one of the project's): 0. Results: printed, and
// written to .cache/bench/fuzz.json.

import {copyFile, mkdir, mkdtemp, rm, writeFile} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {checkLoadable, readGguf} from "../gguf/index.js";
import {GenGuard} from "../src/gen/GenGuard.js";
import {ensureAddonBuilt} from "../src/native/addonBuild.js";
import {StreamGuard} from "../src/stream/StreamGuard.js";
import {fuzzCheckpoint} from "../test/helpers/checkpointFuzz.js";
import {cachedFixture} from "../test/helpers/fixtures.js";
import {fuzzModel} from "../test/helpers/ggufFuzz.js";
import type {FuzzCase, FuzzReport} from "../test/helpers/ggufFuzz.js";
import {cachedConvertedFixture} from "../test/helpers/plantedGen.js";
import {benchCacheDir, prepareBenchModels, repoRoot} from "./benchModels.js";

const args = process.argv.slice(2);
const flag = (name: string) => {
    const at = args.indexOf(name);
    return at >= 0 ? args[at + 1] : undefined;
};
const quick = args.includes("--quick");
const mutants = Number(flag("--mutants") ?? (quick ? 40 : 10_000));
const seed = Number(flag("--seed") ?? 1);
const raw = args.includes("--raw");
const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);

const part = flag("--part");

/** The median of `rounds` timings of `run`, in ms. */
async function median(rounds: number, run: () => Promise<unknown>): Promise<number> {
    const times: number[] = [];
    for (let i = 0; i < rounds; i++) {
        const start = performance.now();
        await run();
        times.push(performance.now() - start);
    }
    return times.sort((a, b) => a - b)[Math.floor(rounds / 2)];
}

await ensureAddonBuilt();
if (part !== "fuzz") {
    const models = await prepareBenchModels(quick ? "tiny" : "0.6b");
    const cost: Record<string, unknown> = {size: quick ? "tiny" : "0.6b"};
    for (const [name, file, load] of [
        ["gen", models.stock, async () => (await GenGuard.load({model: models.stock, gpu: false, contextSize: 1024, onWarning: () => undefined})).dispose()],
        ["stream", models.stream.model, async () => (await StreamGuard.load({model: models.stream.model, head: models.stream.head, gpu: false, contextSize: 1024})).dispose()]
    ] as const) {
        await load(); // warm: the page cache, llama.cpp's first load
        const header = await readGguf(file);
        // the load reads the header anyway (its keys, the vocabulary): what the check adds is checkLoadable itself
        const checkMs = await median(7, async () => checkLoadable(header));
        const readMs = await median(7, () => readGguf(file));
        const loadMs = await median(5, load);
        cost[name] = {checkMs, readMs, loadMs, ratio: checkMs / loadMs};
        log(`pre-flight ${name} (${cost.size}): checked in ${checkMs.toFixed(0)} ms (the header it needs read in ${readMs.toFixed(0)} ms), ` +
            `the load (which includes both) ${loadMs.toFixed(0)} ms: the check is ${(100 * checkMs / loadMs).toFixed(1)}% of the load`);
    }
    await mkdir(benchCacheDir, {recursive: true});
    await writeFile(path.join(benchCacheDir, `preflight${quick ? "-quick" : ""}.json`), JSON.stringify(cost, null, 2) + "\n");
}
if (part === "cost")
    process.exit(0);
const dir = await mkdtemp(path.join(os.tmpdir(), "qwenguard-fuzz-"));
const results: Record<string, unknown> = {mutants, seed, raw, started: new Date().toISOString(), cpu: os.cpus()[0]?.model};
try {
    const stream = await cachedConvertedFixture("tiny-stream", "q8_0");
    await copyFile(stream.replace(/\.gguf$/, ".head.gguf"), path.join(dir, "model.head.gguf"));
    let done = 0;
    const tally: Record<string, number> = {};
    const onCase = (fuzzCase: FuzzCase) => {
        tally[fuzzCase.stage] = (tally[fuzzCase.stage] ?? 0) + 1;
        if (++done % 250 === 0) // the running totals: what a run stopped early found
            log(`fuzz: ${done} of ${mutants} (${Object.entries(tally).map(([stage, n]) => `${stage} ${n}`).join(", ")})`);
    };
    const share = (fraction: number) => Math.round(mutants * fraction);
    const runs: Array<[string, () => Promise<FuzzReport>]> = [
        ["gen gguf", async () => fuzzModel(await cachedConvertedFixture("tiny-gen", "q8_0"), {mutants: share(0.6), seed, dir, raw, onCase})],
        ["stream gguf", async () => fuzzModel(stream, {mutants: share(0.2), seed: seed + 1, dir, raw, onCase})],
        ["gen checkpoint", async () => fuzzCheckpoint(await cachedFixture("tiny-gen"), {mutants: share(0.15), seed: seed + 2, dir, onCase})],
        ["stream checkpoint", async () => fuzzCheckpoint(await cachedFixture("tiny-stream"), {mutants: mutants - share(0.6) - share(0.2) - share(0.15), seed: seed + 3, dir, onCase})]
    ];
    // --only gguf | checkpoint: those parts alone, with the seeds and shares of the whole run (to redo a part)
    const only = flag("--only");
    const out = path.join(benchCacheDir, `fuzz${quick ? "-quick" : ""}${only != null ? `-${only}` : ""}.json`);
    await mkdir(benchCacheDir, {recursive: true});
    for (const [name, run] of runs.filter(([name]) => only == null || name.endsWith(only))) {
        const report = await run();
        results[name] = report;
        await writeFile(out, JSON.stringify(results, null, 2) + "\n"); // after each part: a long run's figures survive its end
        log(`fuzz ${name}: ${report.mutants} mutants in ${report.seconds.toFixed(0)} s: ${Object.entries(report.counts).map(([stage, n]) => `${stage} ${n}`).join(", ")}` +
            (raw && name.endsWith("gguf") ? `; aborts the pre-flight check prevented: ${report.abortsPrevented}` : ""));
        for (const crash of report.crashes)
            log(`  ${crash.stage}: mutant ${crash.index} (${crash.mutation}): ${crash.message}`);
    }
} finally {
    await rm(dir, {recursive: true, force: true});
}
log(`fuzz: results in ${path.relative(repoRoot, path.join(benchCacheDir, `fuzz${quick ? "-quick" : ""}.json`))}`);
