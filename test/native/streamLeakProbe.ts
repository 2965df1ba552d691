// Run by streamLifecycle.test.ts in a process of its own (so that nothing else the tests do moves its memory): loads a
// Stream model, runs acquire / evaluate / release cycles and prints, after a full GC, every `window` cycles, the
// anonymous resident memory (RssAnon: file-backed pages such as shared libraries come and go as the kernel reclaims
// them) less the V8 heap (which V8 shrinks by tens of MiB over the first thousands of cycles): what native code holds.
//   node streamLeakProbe.js <model.gguf> <cycles> <window>   →   {"native": [bytes, ...]}
// Without arguments (e.g. when tap runs every file of the folder) it does nothing.

import {readFileSync} from "node:fs";
import {setFlagsFromString} from "node:v8";
import {runInNewContext} from "node:vm";
import {loadLlamaRuntime} from "../../src/native/loadAddon.js";
import {SMALL_CONTEXT, randomTokens, seededRandom} from "./streamTestKit.js";

if (process.argv.length < 5)
    process.exit(0);
const [modelPath, cycles, window] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const anonymousBytes = (): number => {
    const match = /^RssAnon:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
    return match === null ? process.memoryUsage().rss : Number(match[1]) * 1024;
};
const nativeBytes = () => {
    gc();
    return anonymousBytes() - process.memoryUsage().heapTotal;
};

const {addon} = await loadLlamaRuntime({gpu: false});
// Not mapped: read into memory at once, so that model pages faulted in (or reclaimed) as tokens vary do not move the RSS.
const model = await addon.StreamModel.load({modelPath, headPath: "", gpuLayers: 0, useMmap: false});
const context = await model.createContext({...SMALL_CONTEXT, contextSize: 64, maxSequences: 4, batchSize: 16});
const random = seededRandom(5);
const samples: number[] = [];
for (let i = 0; i < cycles; i++) {
    if (i % window === 0)
        samples.push(nativeBytes());
    const sequence = context.acquireSequence();
    const tokens = randomTokens(random, 1 + Math.floor(random() * 3));
    await context.evaluate([{sequence, tokens, outputs: Int32Array.from(tokens.keys()), heads: 3, hidden: random() < 0.5}]);
    context.releaseSequence(sequence);
}
samples.push(nativeBytes());
if (context.usedCells() !== 0)
    throw new Error(`Expected no used cells after the cycles but found ${context.usedCells()}`);
await context.dispose();
await model.dispose();
process.stdout.write(JSON.stringify({native: samples}) + "\n");
