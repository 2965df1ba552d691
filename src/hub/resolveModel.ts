// `resolveModel`: what every `model` option goes through: a path is used as it is, a name is looked up in the cache and
// pulled when missing.

import {existsSync, statSync} from "node:fs";
import path from "node:path";
import {ModelNotCachedError} from "./errors.js";
import {findCachedModel, modelCacheDir} from "./modelCache.js";
import type {CachedModel} from "./modelCache.js";
import {OFFICIAL_MODELS, isModelName, parseModelName} from "./modelNames.js";
import {pullModel} from "./pullModel.js";
import type {PullModelOptions} from "./pullModel.js";

/** A model to load. */
export interface ResolvedModel {
    /** The GGUF to load (a Stream backbone's head is beside it, where its metadata says). */
    readonly path: string;
    /** The cached model, when a name was given. */
    readonly cached: CachedModel | undefined;
}

/** Options of {@link resolveModel}. */
export interface ResolveModelOptions extends PullModelOptions {
    /** Pull a named model that is not in the cache (default true); false: a {@link ModelNotCachedError} instead. */
    readonly pull?: boolean;
}

/**
 * Resolve a `model` option: an existing file is used as it is; a model name (`gen-0.6b`, `hf:…`, an https URL) is
 * found in the cache, or pulled into it first.
 * @param nameOrPath - a GGUF path or a model name
 * @param options - whether to pull, and the pull's options (progress, cancellation, cache folder)
 * @returns the file to load
 * @throws {Error} for a path that does not exist and is no model name (listing the names)
 * @throws {ModelNotCachedError} for a name not in the cache with `pull: false` or HF_HUB_OFFLINE set
 * @throws what {@link pullModel} throws
 * @example
 * const {path} = await resolveModel("gen-0.6b"); // ~/.cache/qwenguard/models/gen-0.6b-q8_0/model.gguf
 */
export async function resolveModel(nameOrPath: string, options: ResolveModelOptions = {}): Promise<ResolvedModel> {
    if (existsSync(nameOrPath)) {
        if (!statSync(nameOrPath).isFile())
            throw new Error(`Model ${path.resolve(nameOrPath)} is a folder, not a GGUF file (a checkpoint folder is converted with \`qwenguard convert\`)`);
        return {path: nameOrPath, cached: undefined};
    }
    if (!isModelName(nameOrPath)) {
        const looksLikePath = nameOrPath.includes(path.sep) || nameOrPath.includes("/") || /\.gguf$/i.test(nameOrPath);
        throw new Error(looksLikePath ? `Model file ${path.resolve(nameOrPath)} does not exist`
            : `Model ${JSON.stringify(nameOrPath)} is neither a file nor a model name (${Object.keys(OFFICIAL_MODELS).join(", ")}, hf:OWNER/REPO, an https URL)`);
    }
    const source = parseModelName(nameOrPath);
    const cacheDir = options.cacheDir ?? modelCacheDir(options.env);
    const cached = await findCachedModel(source, cacheDir);
    if (cached !== undefined)
        return {path: cached.path, cached};
    if (options.pull === false)
        throw new ModelNotCachedError(`${source.name} is not in the model cache (${cacheDir}): run \`qwenguard pull ${nameOrPath}\``);
    const pulled = await pullModel(nameOrPath, {...options, cacheDir});
    return {path: pulled.path, cached: pulled};
}
