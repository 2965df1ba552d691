// CLI: write a fixture checkpoint. `npm run fixtures -- <kind> <outdir> [--dtype BF16|F16|F32] [--seed N]
// [--max-shard-bytes N]`, e.g. `npm run fixtures -- stream-0.6b /data/stream-0.6b` for benchmarks.

import {parseArgs} from "node:util";
import {SAFETENSORS_DTYPES} from "../../gguf/SafetensorsReader.js";
import type {SafetensorsDtype} from "../../gguf/SafetensorsReader.js";
import {FIXTURE_KINDS, writeFixture} from "./fixtures.js";
import type {FixtureKind} from "./fixtures.js";

const USAGE = `Usage: npm run fixtures -- <kind> <outdir> [--dtype BF16|F16|F32] [--seed N] [--max-shard-bytes N]
kinds: ${Object.keys(FIXTURE_KINDS).join(", ")}`;

const {positionals, values} = parseArgs({
    allowPositionals: true,
    options: {
        "dtype": {type: "string", default: "BF16"},
        "seed": {type: "string", default: "1"},
        "max-shard-bytes": {type: "string"}
    }
});
const [kind, outDir] = positionals;
const seed = Number(values.seed);
const maxShardBytes = values["max-shard-bytes"] === undefined ? undefined : Number(values["max-shard-bytes"]);
if (positionals.length !== 2 || !Object.hasOwn(FIXTURE_KINDS, kind) || !Object.hasOwn(SAFETENSORS_DTYPES, values.dtype) ||
    !Number.isSafeInteger(seed) || (maxShardBytes !== undefined && !(Number.isSafeInteger(maxShardBytes) && maxShardBytes > 0))) {
    console.error(USAGE);
    process.exit(2);
}

const started = Date.now();
await writeFixture(kind as FixtureKind, outDir, {dtype: values.dtype as SafetensorsDtype, seed, maxShardBytes});
console.log(`Wrote ${kind} (${values.dtype}) to ${outDir} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
