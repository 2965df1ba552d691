// The child process of probeModel: loads one model file and judges one short conversation with it, then says how it
// went as one JSON line on stdout. A llama.cpp abort kills this process only.
//
//   node probeModelChild.js <model.gguf> [--head <head.gguf>] [--raw]
//   node probeModelChild.js --serve     (one JSON job {model, head?, raw?} per stdin line, one report line each)
//
// --raw loads through llama.cpp directly (node-llama-cpp for Gen, the addon's StreamModel for Stream), without
// qwenguard's pre-flight check: how the fuzz harness learns what the check protects against.

import {createInterface} from "node:readline";
import {GenGuard} from "../gen/GenGuard.js";
import {readGuardVariant} from "../gen/readGuardVariant.js";
import {AddonHead} from "../native/AddonTypes.js";
import {loadLlamaRuntime} from "../native/loadAddon.js";
import {StreamGuard} from "../stream/StreamGuard.js";
import {JOB_MARK} from "./probeModel.js";

const args = process.argv.slice(2);
// short, but long enough that the Gen template (about 400 tokens) and the Stream prompt both run
const conversation = [{role: "user" as const, content: "How do I bake bread?"}, {role: "assistant" as const, content: "Mix flour and water."}];

/** Runs `use`, then `dispose` whatever happened: a server-mode child outlives many failed loads. */
async function using<T extends {dispose(): Promise<void>}>(resource: T, use: (resource: T) => Promise<unknown>): Promise<void> {
    try {
        await use(resource);
    } finally {
        await resource.dispose();
    }
}

async function probe(model: string, head: string | undefined, raw: boolean): Promise<void> {
    const stream = (await readGuardVariant(model)) === "stream-backbone";
    if (raw) {
        const {llama, addon} = await loadLlamaRuntime({gpu: false});
        if (stream)
            await using(await addon.StreamModel.load({modelPath: model, headPath: head ?? "", gpuLayers: 0, useMmap: true}), async (native) => {
                await using(await native.createContext({contextSize: 256, maxSequences: 1, batchSize: 64, ubatchSize: 64, outputBatchSize: 64,
                    threads: 1, flashAttention: "off", stopAfterHidden: true, kvLayout: "per-sequence",
                    cacheTypeK: "f16", cacheTypeV: "f16"}), async (context) => {
                    const sequence = context.acquireSequence();
                    await context.evaluate([{sequence, tokens: native.tokenize("How do I bake bread?", false), outputs: Int32Array.of(0),
                        heads: AddonHead.query | AddonHead.response}]);
                });
            });
        else
            await using(await llama.loadModel({modelPath: model, gpuLayers: 0}), async (loaded) => {
                await using(await loaded.createContext({contextSize: 256}), (context) =>
                    context.getSequence().evaluateWithoutGeneratingNewTokens(loaded.tokenize("How do I bake bread?")));
            });
        return;
    }
    if (stream)
        await using(await StreamGuard.load({model, head, threads: 1, contextSize: 256, maxSessions: 1, gpu: false}), (guard) => guard.moderate(conversation));
    else
        await using(await GenGuard.load({model, threads: 1, contextSize: 1024, gpu: false, onWarning: () => undefined}), (guard) => guard.moderate(conversation));
}

async function report(model: string, head: string | undefined, raw: boolean): Promise<boolean> {
    try {
        await probe(model, head, raw);
        process.stdout.write(JSON.stringify({ok: true}) + "\n");
        return true;
    } catch (error) {
        process.stdout.write(JSON.stringify({ok: false, name: (error as Error).name, message: (error as Error).message}) + "\n");
        return false;
    }
}

if (args[0] === "--serve") {
    // many files, one process: the fuzz harness's way to skip starting node and llama.cpp for each file
    for await (const line of createInterface({input: process.stdin})) {
        const job = JSON.parse(line) as {model: string, head?: string, raw?: boolean};
        process.stderr.write(`${JOB_MARK}\n`); // llama.cpp's message after this line is about this job
        await report(job.model, job.head, job.raw === true);
    }
} else if (!(await report(args[0], args.includes("--head") ? args[args.indexOf("--head") + 1] : undefined, args.includes("--raw"))))
    process.exitCode = 1;
