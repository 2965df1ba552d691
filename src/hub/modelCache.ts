// The model cache: one folder per model (its GGUF, the Stream head, manifest.json), plus `.downloads/` (checkpoint
// files of pulls in progress, resumable) and `.locks/`. A model folder appears, by rename, only when complete.

import {existsSync} from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {cacheFolderName, parseModelName} from "./modelNames.js";
import type {ModelSource} from "./modelNames.js";

/** The file name of a model's GGUF in its folder (a Stream head is `model.head.gguf` beside it). */
export const MODEL_FILE = "model.gguf";
export const MANIFEST_FILE = "manifest.json";
/** Bumped when the manifest's layout changes. */
export const MANIFEST_VERSION = 1;

/** What manifest.json records about a cached model. */
export interface ModelManifest {
    readonly manifestVersion: number;
    /** The canonical name (`gen-0.6b:q8_0`). */
    readonly name: string;
    readonly variant: "gen" | "stream";
    /** The weight type (q8_0, q4_k_m, …; for a ready GGUF, what its file type says). */
    readonly type: string;
    readonly source: {
        readonly kind: ModelSource["kind"],
        readonly repo?: string,
        readonly revision?: string,
        /** The commit the revision resolved to when pulled. */
        readonly commit?: string,
        readonly file?: string,
        readonly url?: string
    };
    /** The files downloaded, with their sizes and sha256. */
    readonly downloaded: ReadonlyArray<{readonly file: string, readonly size: number, readonly sha256: string}>;
    /** The files of the model in its folder. */
    readonly files: ReadonlyArray<{readonly file: string, readonly size: number}>;
    /** qwenguard's version, whose converter made the GGUF (absent for a ready GGUF). */
    readonly converterVersion?: string;
    /** When the pull finished (ISO 8601). */
    readonly pulledAt: string;
}

/** A model in the cache. */
export interface CachedModel {
    readonly name: string;
    readonly dir: string;
    /** The GGUF to load. */
    readonly path: string;
    /** The Stream head, for a Stream model. */
    readonly headPath: string | undefined;
    readonly manifest: ModelManifest;
    /** Bytes on disk. */
    readonly bytes: number;
}

/**
 * The cache folder: `QWENGUARD_MODELS`, else `$XDG_CACHE_HOME/qwenguard/models`, else `~/.cache/qwenguard/models`.
 * @param env - the environment (default `process.env`)
 */
export function modelCacheDir(env: NodeJS.ProcessEnv = process.env): string {
    if (env.QWENGUARD_MODELS)
        return path.resolve(env.QWENGUARD_MODELS);
    return path.join(env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), ".cache"), "qwenguard", "models");
}

/**
 * The cached model of a name, if it has been pulled.
 * @param source - the parsed name
 * @param cacheDir - the cache folder (default {@link modelCacheDir})
 */
export async function findCachedModel(source: ModelSource, cacheDir = modelCacheDir()): Promise<CachedModel | undefined> {
    const model = await readCachedModel(path.join(cacheDir, cacheFolderName(source)));
    return model?.name === source.name ? model : undefined;
}

/**
 * Every model in the cache, by name.
 * @param cacheDir - the cache folder (default {@link modelCacheDir})
 */
export async function listCachedModels(cacheDir = modelCacheDir()): Promise<CachedModel[]> {
    const entries = await fs.readdir(cacheDir, {withFileTypes: true}).catch(() => []);
    const models = await Promise.all(entries.filter((entry) => entry.isDirectory() && !entry.name.startsWith("."))
        .map((entry) => readCachedModel(path.join(cacheDir, entry.name))));
    return models.filter((model): model is CachedModel => model !== undefined).sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Delete a model from the cache.
 * @param name - its name, as given to pull (or its canonical name)
 * @param cacheDir - the cache folder (default {@link modelCacheDir})
 * @returns the model deleted, or undefined when it was not in the cache
 */
export async function removeCachedModel(name: string, cacheDir = modelCacheDir()): Promise<CachedModel | undefined> {
    const model = await findCachedModel(parseModelName(name), cacheDir);
    if (model === undefined)
        return undefined;
    // rename first, so that a reader never sees a half-deleted folder under the model's name
    const doomed = path.join(cacheDir, `.removed-${path.basename(model.dir)}-${process.pid}-${Date.now()}`);
    await fs.rename(model.dir, doomed);
    await fs.rm(doomed, {recursive: true, force: true});
    return model;
}

async function readCachedModel(dir: string): Promise<CachedModel | undefined> {
    let manifest: ModelManifest;
    try {
        manifest = JSON.parse(await fs.readFile(path.join(dir, MANIFEST_FILE), "utf8")) as ModelManifest;
    } catch {
        return undefined;
    }
    if (manifest.manifestVersion !== MANIFEST_VERSION || typeof manifest.name !== "string")
        return undefined;
    const modelPath = path.join(dir, MODEL_FILE);
    const headPath = manifest.variant === "stream" ? path.join(dir, "model.head.gguf") : undefined;
    if (!existsSync(modelPath) || (headPath !== undefined && !existsSync(headPath)))
        return undefined;
    const bytes = manifest.files.reduce((sum, {size}) => sum + size, 0);
    return {name: manifest.name, dir, path: modelPath, headPath, manifest, bytes};
}
