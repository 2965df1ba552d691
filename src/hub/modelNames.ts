// Model names: what `-m gen-0.6b`, `hf:OWNER/REPO[@REV][:TYPE]`, `hf:OWNER/REPO[@REV]/FILE.gguf` and `https://….gguf`
// mean, as a ModelSource, and the canonical name and cache folder of each.

import {createHash} from "node:crypto";
import {quantizationTypes} from "../quantize/quantizeModel.js";

/** The Qwen3Guard models qwenguard knows by name, and their official checkpoint repositories on the Hugging Face hub. */
export const OFFICIAL_MODELS = {
    "gen-0.6b": {repo: "Qwen/Qwen3Guard-Gen-0.6B", variant: "gen"},
    "gen-4b": {repo: "Qwen/Qwen3Guard-Gen-4B", variant: "gen"},
    "gen-8b": {repo: "Qwen/Qwen3Guard-Gen-8B", variant: "gen"},
    "stream-0.6b": {repo: "Qwen/Qwen3Guard-Stream-0.6B", variant: "stream"},
    "stream-4b": {repo: "Qwen/Qwen3Guard-Stream-4B", variant: "stream"},
    "stream-8b": {repo: "Qwen/Qwen3Guard-Stream-8B", variant: "stream"}
} as const satisfies Record<string, {repo: string, variant: "gen" | "stream"}>;

/** A name of {@link OFFICIAL_MODELS}. */
export type OfficialModelName = keyof typeof OFFICIAL_MODELS;

/** The weight type a checkpoint is converted to when the name gives none. */
export const DEFAULT_MODEL_TYPE = "q8_0";

/** Where a model comes from. */
export type ModelSource =
    /** A Qwen3Guard checkpoint repository (safetensors): downloaded, converted, quantized to `type`. */
    | {kind: "checkpoint", name: string, repo: string, revision: string | undefined, type: string, variant?: "gen" | "stream"}
    /** A ready GGUF file in a hub repository. */
    | {kind: "hub-gguf", name: string, repo: string, revision: string | undefined, file: string}
    /** A ready GGUF at a URL. */
    | {kind: "url", name: string, url: string};

/** A model name that does not say a model. */
export class ModelNameError extends Error {
    override name = "ModelNameError";
}

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const REVISION = /^[A-Za-z0-9._\-/]+$/;

/**
 * Whether a `-m` value is meant as a model name rather than a file path: one of the official names (with an optional
 * `:TYPE`), or an `hf:` or `https://` / `http://` reference.
 * @param value - what the user gave
 */
export function isModelName(value: string): boolean {
    return /^(hf:|https?:\/\/)/.test(value) || Object.hasOwn(OFFICIAL_MODELS, value.split(":")[0]);
}

/**
 * Parse a model name.
 * @param name - `gen-0.6b`, `stream-4b:q4_k_m`, `hf:OWNER/REPO[@REV][:TYPE]`, `hf:OWNER/REPO[@REV]/FILE.gguf`, or
 *   an `https://` URL of a GGUF
 * @returns where the model comes from, with its canonical name (`gen-0.6b:q8_0`)
 * @throws {ModelNameError} naming what is wrong, and listing the known names for an unknown one
 * @example
 * parseModelName("gen-4b:Q4_K_M"); // {kind: "checkpoint", name: "gen-4b:q4_k_m", repo: "Qwen/Qwen3Guard-Gen-4B", type: "q4_k_m", …}
 */
export function parseModelName(name: string): ModelSource {
    if (/^https?:\/\//.test(name))
        return parseUrl(name);
    if (name.startsWith("hf:"))
        return parseHubReference(name);

    const [base, type, ...rest] = name.split(":");
    const official = Object.hasOwn(OFFICIAL_MODELS, base) ? OFFICIAL_MODELS[base as OfficialModelName] : undefined;
    if (official === undefined || rest.length > 0)
        throw new ModelNameError(`Unknown model ${JSON.stringify(name)}: expected one of ${Object.keys(OFFICIAL_MODELS).join(", ")} (with an optional :TYPE), ` +
            "hf:OWNER/REPO[@REV][:TYPE], hf:OWNER/REPO[@REV]/FILE.gguf, an https:// URL of a GGUF, or a path to a GGUF file");
    const resolvedType = modelType(type, name);
    return {kind: "checkpoint", name: `${base}:${resolvedType}`, repo: official.repo, revision: undefined, type: resolvedType, variant: official.variant};
}

function parseHubReference(name: string): ModelSource {
    const usage = "expected hf:OWNER/REPO[@REV][:TYPE] (a checkpoint repository) or hf:OWNER/REPO[@REV]/FILE.gguf (a GGUF in it)";
    // a checkpoint: hf:OWNER/REPO[@REV][:TYPE], where REV may hold slashes (refs/pr/1) but no colon
    const checkpoint = /^hf:([^/@:]+)\/([^/@:]+)(?:@([^:]+))?(?::([^:]+))?$/.exec(name);
    // a file: hf:OWNER/REPO[@REV]/PATH.gguf, where a slash in REV is written %2F
    const file = /^hf:([^/@:]+)\/([^/@:]+)(?:@([^/:]+))?\/([^:]+)$/.exec(name);
    const match = checkpoint !== null && !/\.gguf$/i.test(checkpoint[3] ?? "") ? checkpoint : file;
    if (match === null || !REPO_PART.test(match[1]) || !REPO_PART.test(match[2]))
        throw new ModelNameError(`Invalid model reference ${JSON.stringify(name)}: ${usage}`);
    const repo = `${match[1]}/${match[2]}`;
    const revision = match[3] !== undefined ? decodeURIComponent(match[3]) : undefined;
    if (revision !== undefined && (!REVISION.test(revision) || revision.split("/").some((part) => part === "" || part === "..")))
        throw new ModelNameError(`Invalid revision ${JSON.stringify(revision)} in ${JSON.stringify(name)}: expected a branch, a tag or a commit`);
    const at = revision !== undefined ? `@${encodeURIComponent(revision)}` : "";
    if (match === checkpoint) {
        const type = modelType(checkpoint[4], name);
        return {kind: "checkpoint", name: `hf:${repo}${at}:${type}`, repo, revision, type};
    }
    const filePath = match[4];
    if (!/\.gguf$/i.test(filePath) || filePath.split("/").some((part) => part === "" || part === "." || part === ".."))
        throw new ModelNameError(`Invalid model reference ${JSON.stringify(name)}: ${JSON.stringify(filePath)} is not a .gguf file; ${usage}`);
    return {kind: "hub-gguf", name: `hf:${repo}${at}/${filePath}`, repo, revision, file: filePath};
}

function parseUrl(name: string): ModelSource {
    let url: URL;
    try {
        url = new URL(name);
    } catch {
        throw new ModelNameError(`Invalid model URL ${JSON.stringify(name)}`);
    }
    // without a hash to check, only TLS vouches for the bytes: plain http only from this machine
    if (url.protocol === "http:" && !["127.0.0.1", "localhost", "[::1]"].includes(url.hostname))
        throw new ModelNameError(`Expected an https:// URL but received ${JSON.stringify(name)}: a model over plain http could be swapped on the way`);
    if (!/\.gguf$/i.test(url.pathname))
        throw new ModelNameError(`Expected the URL of a .gguf file but received ${JSON.stringify(name)}: a checkpoint repository is pulled as hf:OWNER/REPO`);
    return {kind: "url", name: url.href, url: url.href};
}

function modelType(type: string | undefined, name: string): string {
    if (type === undefined)
        return DEFAULT_MODEL_TYPE;
    const upper = type.toUpperCase();
    if (!(upper in quantizationTypes) || upper === "F32")
        throw new ModelNameError(`Unknown type ${JSON.stringify(type)} in ${JSON.stringify(name)}: expected one of ` +
            `${Object.keys(quantizationTypes).filter((known) => known !== "F32").map((known) => known.toLowerCase()).join(", ")}`);
    return upper.toLowerCase();
}

/**
 * The folder of a model in the cache, from its canonical name: `gen-0.6b-q8_0` for an official one; for others a
 * readable stem and a short hash of the name (two names never share a folder).
 * @param source - a parsed name
 */
export function cacheFolderName(source: ModelSource): string {
    if (source.kind === "checkpoint" && source.variant !== undefined)
        return source.name.replace(":", "-");
    const stem = source.name.replace(/^hf:/, "hf-").replace(/^https?:\/\//, "url-").replace(/[^A-Za-z0-9._-]+/g, "-").slice(0, 80);
    return `${stem}-${createHash("sha256").update(source.name).digest("hex").slice(0, 8)}`;
}
