// The short fuzz run of `npm test` (the long one is `npm run bench:fuzz`): seeded mutants of a tiny Gen model, of a
// tiny Stream backbone, and of their Hugging Face checkpoints, through the reader or the converter, the pre-flight
// check and a real load in child processes. None may crash the loading process, hang, or fail with an error that is
// not one of the project's (a TypeError where a clear refusal belongs).

import {copyFile} from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {ensureAddonBuilt} from "../../src/native/addonBuild.js";
import {fuzzCheckpoint} from "../helpers/checkpointFuzz.js";
import {cachedFixture} from "../helpers/fixtures.js";
import {fuzzModel} from "../helpers/ggufFuzz.js";
import type {FuzzReport} from "../helpers/ggufFuzz.js";
import {cachedConvertedFixture} from "../helpers/plantedGen.js";
import {tempDir} from "../gguf/ggufTestKit.js";

await ensureAddonBuilt();

function summary(report: FuzzReport): string {
    return `${report.mutants} mutants in ${report.seconds.toFixed(0)} s: ${Object.entries(report.counts).map(([stage, count]) => `${stage} ${count}`).join(", ")}`;
}

t.test("mutants of a Gen GGUF never crash or hang a load", async (t) => {
    const report = await fuzzModel(await cachedConvertedFixture("tiny-gen", "q8_0"), {mutants: 60, seed: 11, dir: await tempDir(t)});
    t.same(report.crashes, [], summary(report));
    t.ok(report.counts.reader > 0 && report.counts.preflight > 0 && report.counts.loaded > 0, "the mutants reach every stage");
});

t.test("mutants of a Stream backbone never crash or hang a load", async (t) => {
    const backbone = await cachedConvertedFixture("tiny-stream", "q8_0");
    const dir = await tempDir(t);
    await copyFile(backbone.replace(/\.gguf$/, ".head.gguf"), path.join(dir, "model.head.gguf")); // the head the backbone names
    const report = await fuzzModel(backbone, {mutants: 30, seed: 12, dir});
    t.same(report.crashes, [], summary(report));
    t.ok(report.counts.loaded > 0, "some mutants still load");
});

t.test("mutants of Gen and Stream checkpoints are refused by the converter with its errors, or convert and load", async (t) => {
    for (const [kind, mutants, seed] of [["tiny-gen", 18, 13], ["tiny-stream", 10, 14]] as const) {
        const report = await fuzzCheckpoint(await cachedFixture(kind), {mutants, seed, dir: await tempDir(t)});
        t.same(report.crashes, [], `${kind}: ${summary(report)}`);
        t.ok(report.counts.converter > 0 && report.counts.loaded > 0, `${kind}: refused and converted mutants both`);
    }
});
