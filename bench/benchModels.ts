// The benchmark's models: random-weight checkpoints of the real Qwen3Guard shapes, written by the test fixture generator
// and converted to q8_0 by the project's own converter, cached in `.cache/bench/` and regenerated when the generator or
// the converter changes.

import {createHash} from "node:crypto";
import {existsSync} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import {fileURLToPath} from "node:url";
// from gguf/ directly, not src/index.js: preparing models must not load node-llama-cpp (scripts/gpu-check.sh runs this
// on a machine with Node and nothing else)
import {convert} from "../gguf/convert/convert.js";
import {FIXTURE_GENERATOR_VERSION, FIXTURE_KINDS, writeFixture} from "../test/helpers/fixtures.js";
import type {FixtureKind} from "../test/helpers/fixtures.js";

/** Model sizes the bench runs: `tiny` is the `--quick` smoke run's (real vocabulary, 2 layers of 64). */
export type BenchSize = "tiny" | "0.6b" | "4b";

/** The models of one size, ready to load. */
export interface BenchModels {
    /** The Stream backbone GGUF (q8_0) and its head GGUF. */
    stream: {model: string, head: string},
    /** The stock backbone: a plain tied-LM-head Qwen3 GGUF (q8_0) of the same shape; also the Gen model. */
    stock: string
}

/** The fixture kinds of each size. */
const KINDS: Record<BenchSize, {stream: FixtureKind, gen: FixtureKind}> = {
    "tiny": {stream: "tiny-stream", gen: "tiny-gen"},
    "0.6b": {stream: "stream-0.6b", gen: "gen-0.6b"},
    "4b": {stream: "stream-4b", gen: "gen-4b"}
};

/** The converter's output type for every bench model. */
const OUT_TYPE = "q8_0";

/** The root of the compiled sources (`dist/`), whose `gguf/` holds the converter that runs. */
const distRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The repository root (where `.cache/` lives). */
export const repoRoot = path.resolve(distRoot, "..");

/** Where generated models and results go by default. */
export const benchCacheDir = path.join(repoRoot, ".cache", "bench");

/**
 * Makes sure the models of `size` exist in `cacheDir`, generating and converting what is missing or stale.
 * Each artifact has a key file beside it (`<artifact>.key.json`); an artifact whose key differs from the current one
 * (another generator version, another converter build) is rebuilt. An artifact with no key file at all was made by
 * hand before the bench existed: it is adopted as current (said on `log`).
 * @param size - which shapes
 * @param options.cacheDir - default `.cache/bench/` under the repository root
 * @param options.log - progress lines (default: stderr)
 * @param options.streamOnly - only the Stream pair (`stock` is then empty)
 * @returns the model paths
 */
export async function prepareBenchModels(size: BenchSize, {cacheDir = benchCacheDir, log = (line: string) => process.stderr.write(line + "\n"), streamOnly = false}:
    {cacheDir?: string, log?: (line: string) => void, streamOnly?: boolean} = {}): Promise<BenchModels> {
    await fs.mkdir(cacheDir, {recursive: true});
    const converterHash = await hashModuleGraph(path.join(distRoot, "gguf", "convert", "convert.js"));
    const convertKind = async (kind: FixtureKind): Promise<string> => {
        const {hfDir, checkpointKey} = await ensureCheckpoint(kind, cacheDir, log);
        const ggufFile = path.join(cacheDir, `${kind}-${OUT_TYPE}.gguf`);
        await ensureArtifact(ggufFile, {checkpoint: checkpointKey, converter: converterHash, outType: OUT_TYPE}, log, async () => {
            // converted in place: the backbone names its head file, so the pair cannot be renamed afterwards
            await convert(hfDir, {outFile: ggufFile, outType: OUT_TYPE});
        });
        return ggufFile;
    };
    const {stream, gen} = KINDS[size];
    const streamModel = await convertKind(stream);
    const stock = streamOnly ? "" : await convertKind(gen);
    return {stream: {model: streamModel, head: streamModel.replace(/\.gguf$/, ".head.gguf")}, stock};
}

/**
 * The bench checkpoint of a fixture kind (BF16 safetensors, seed 1) in the bench cache, generated on first use.
 * @returns its folder, and the key it is cached under
 */
export async function ensureCheckpoint(kind: FixtureKind, cacheDir = benchCacheDir, log: (line: string) => void = (line) => void process.stderr.write(line + "\n")):
    Promise<{hfDir: string, checkpointKey: object}> {
    await fs.mkdir(cacheDir, {recursive: true});
    const checkpointKey = {kind, dimensions: FIXTURE_KINDS[kind].dimensions, dtype: "BF16", seed: 1, generatorVersion: FIXTURE_GENERATOR_VERSION};
    const hfDir = path.join(cacheDir, `${kind}-hf`);
    await ensureArtifact(hfDir, checkpointKey, log, async () => {
        const partial = `${hfDir}.partial-${process.pid}`;
        await fs.rm(partial, {recursive: true, force: true});
        await writeFixture(kind, partial);
        await fs.rename(partial, hfDir);
    });
    return {hfDir, checkpointKey};
}

/**
 * Builds `artifact` with `build` unless its key file holds `key`. The key file is written as "incomplete" before the
 * build and completed after it, so an interrupted build is redone.
 */
async function ensureArtifact(artifact: string, key: object, log: (line: string) => void, build: () => Promise<void>): Promise<void> {
    const keyFile = `${artifact}.key.json`;
    const wanted = JSON.stringify(key);
    const name = path.relative(repoRoot, artifact);
    if (existsSync(artifact)) {
        if (!existsSync(keyFile)) {
            log(`bench: adopting ${name} (made before the bench kept keys) as current`);
            await fs.writeFile(keyFile, wanted + "\n");
            return;
        }
        if ((await fs.readFile(keyFile, "utf8")).trim() === wanted)
            return;
        log(`bench: ${name} is stale (generator or converter changed); rebuilding it`);
    } else {
        log(`bench: generating ${name}`);
    }
    await fs.writeFile(keyFile, JSON.stringify({incomplete: true}) + "\n");
    await fs.rm(artifact, {recursive: true, force: true});
    const started = performance.now();
    await build();
    await fs.writeFile(keyFile, wanted + "\n");
    log(`bench: wrote ${name} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

/**
 * A hash of a compiled module and every module it imports by relative path, transitively (paths and contents): the
 * code that runs when it is called, and nothing else (a change elsewhere in gguf/ does not force a reconversion).
 */
async function hashModuleGraph(entry: string): Promise<string> {
    const seen = new Set<string>();
    const pending = [entry];
    while (pending.length > 0) {
        const file = pending.pop()!;
        if (seen.has(file))
            continue;
        seen.add(file);
        const source = await fs.readFile(file, "utf8");
        for (const match of source.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g))
            pending.push(path.resolve(path.dirname(file), match[1]));
    }
    const hash = createHash("sha256");
    for (const file of [...seen].sort())
        hash.update(path.relative(distRoot, file)).update("\0").update(await fs.readFile(file)).update("\0");
    return hash.digest("hex").slice(0, 16);
}
