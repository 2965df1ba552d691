// One run per output: a live run's lock refuses a second run (after its wait), a dead run's stale lock is taken over.

import {existsSync, mkdirSync, utimesSync} from "node:fs";
import path from "node:path";
import lockfile from "proper-lockfile";
import t from "tap";
import {BatchOutputError, moderateFile} from "../../src/index.js";
import type {ModerateFileOptions} from "../../src/index.js";
import {cachedPlantedGen} from "../helpers/plantedGen.js";
import {tempDir} from "../gguf/ggufTestKit.js";
import {readJsonl, writeSyntheticJsonl} from "./batchTestKit.js";

const GEN: ModerateFileOptions = {model: await cachedPlantedGen(), threads: 1, contextSize: 1024, gpu: false};
const dir = await tempDir(t);
const input = path.join(dir, "input.jsonl");
await writeSyntheticJsonl(input, 6);

t.test("an output another live run holds is refused, with why, after the wait; nothing of it is touched", async (t) => {
    const output = path.join(dir, "held.jsonl");
    const release = await lockfile.lock(output, {realpath: false, stale: 10_000, update: 2_500}); // a run in another process, alive
    t.teardown(() => release().catch(() => undefined));
    const warnings: string[] = [];
    await t.rejects(moderateFile(input, output, {...GEN, lockWaitMs: 1000, onWarning: (message) => warnings.push(message)}),
        new BatchOutputError(`Another qwenguard run is writing ${output} (its lock ${output}.lock is kept fresh): ` +
            "two runs on one output would mix their lines; wait for it to end, or stop it"));
    t.match(warnings, [`${output} is locked by another run, or by one that just died: waiting up to 1 s for it`]);
    t.notOk(existsSync(output), "the output was not started");
    t.notOk(existsSync(`${output}.checkpoint.json`), "nor its checkpoint");

    const nowhere = path.join(dir, "no-such-folder", "out.jsonl");
    await t.rejects(moderateFile(input, nowhere, GEN),
        new BatchOutputError(`The folder of the output ${nowhere} does not exist: create ${path.dirname(nowhere)} first`));
});

t.test("the stale lock of a run that died is taken over at once, and the run's own lock is gone when it ends", async (t) => {
    const output = path.join(dir, "stale.jsonl");
    mkdirSync(`${output}.lock`); // what a run killed with kill -9 leaves, last refreshed a minute ago
    const minuteAgo = new Date(Date.now() - 60_000);
    utimesSync(`${output}.lock`, minuteAgo, minuteAgo);
    const warnings: string[] = [];
    const summary = await moderateFile(input, output, {...GEN, lockWaitMs: 1000, onWarning: (message) => warnings.push(message)});
    t.equal(summary.complete, true);
    t.equal(readJsonl(output).length, summary.processed);
    t.same(warnings, [], "no wait");
    t.notOk(existsSync(`${output}.lock`), "released");
});
