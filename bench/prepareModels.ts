// `node dist/bench/prepareModels.js --size tiny|0.6b|4b [--stream-only] [--cache-dir DIR]`: generates the bench models
// of one size (as `npm run bench` would) and prints their paths as JSON, without loading llama.cpp. Used by
// scripts/gpu-check.sh, which runs the native core on a GPU machine that has Node but not this package's dependencies.

import path from "node:path";
import {parseArgs} from "node:util";
import {benchCacheDir, prepareBenchModels} from "./benchModels.js";
import type {BenchSize} from "./benchModels.js";

const USAGE = "Usage: node dist/bench/prepareModels.js --size tiny|0.6b|4b [--stream-only] [--cache-dir DIR]";
const SIZES: readonly BenchSize[] = ["tiny", "0.6b", "4b"];

async function main(): Promise<number> {
    let values;
    try {
        ({values} = parseArgs({options: {
            "size": {type: "string"},
            "stream-only": {type: "boolean", default: false},
            "cache-dir": {type: "string"}
        }, strict: true, allowPositionals: false}));
    } catch (error) {
        process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
        return 2;
    }
    const size = values.size as BenchSize | undefined;
    if (size === undefined || !SIZES.includes(size)) {
        process.stderr.write(`--size must be one of ${SIZES.join(", ")}${size === undefined ? "" : ` (got "${size}")`}\n${USAGE}\n`);
        return 2;
    }
    const cacheDir = values["cache-dir"] === undefined ? benchCacheDir : path.resolve(values["cache-dir"]);
    const models = await prepareBenchModels(size, {cacheDir, streamOnly: values["stream-only"]});
    process.stdout.write(JSON.stringify(models) + "\n");
    return 0;
}

process.exitCode = await main();
