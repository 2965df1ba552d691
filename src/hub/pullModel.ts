// `pullModel`: a model name → a complete model folder in the cache. Checkpoints are downloaded (resumably), checked
// against the hub's hashes, converted by qwenguard's converter and quantized; ready GGUFs are downloaded, checked and
// probed. One process pulls a model at a time (a lock a killed process leaves behind goes stale); the folder appears
// under the model's name only when complete.

import fs from "node:fs/promises";
import path from "node:path";
import {setTimeout as sleep} from "node:timers/promises";
import lockfile from "proper-lockfile";
import {GgufValueType, readGguf} from "../../gguf/index.js";
import {SUPPORTED_ARCHITECTURES, convert} from "../../gguf/convert/convert.js";
import type {OutType} from "../../gguf/convert/ModelConverter.js";
import {packageVersion} from "../native/runtimeInfo.js";
import {probeModel} from "../probe/probeModel.js";
import {quantizationTypes, quantizeModel} from "../quantize/quantizeModel.js";
import {HubClient} from "./HubClient.js";
import type {HubFile, HubRepoInfo} from "./HubClient.js";
import {INCOMPLETE, downloadFiles} from "./downloadFiles.js";
import type {DownloadedFile, FileDownload} from "./downloadFiles.js";
import {HubNotFoundError, HubUnreachableError, InsufficientSpaceError, ModelNotCachedError, NotAGuardModelError, PullError} from "./errors.js";
import {hubEnvironment} from "./hubEnvironment.js";
import {MANIFEST_FILE, MANIFEST_VERSION, MODEL_FILE, findCachedModel, modelCacheDir} from "./modelCache.js";
import type {CachedModel, ModelManifest} from "./modelCache.js";
import {cacheFolderName, parseModelName} from "./modelNames.js";
import type {ModelSource} from "./modelNames.js";

/** What a pull reports as it goes (the CLI's `--json` events are these objects). */
export type PullEvent =
    /** Already in the cache: nothing to do. */
    | {event: "cached", name: string, path: string}
    /** Another process is pulling the same model: this one waits for it. */
    | {event: "waiting", name: string}
    /** The source is resolved: the files to fetch and their sizes. */
    | {event: "resolved", name: string, source: string, commit?: string, files: number, totalBytes: number, downloadBytes: number}
    /** Download progress, all files together. */
    | {event: "progress", name: string, downloadedBytes: number, totalBytes: number, bytesPerSecond: number}
    /** A file is downloaded and its hash checked (`reused`: it was already complete from an earlier pull). */
    | {event: "file", name: string, file: string, size: number, reused: boolean}
    | {event: "convert", name: string, type: string}
    | {event: "quantize", name: string, type: string, bytesWritten: number}
    /** A ready GGUF from outside the official repositories is loaded once in a child process. */
    | {event: "probe", name: string}
    | {event: "done", name: string, path: string, bytes: number, seconds: number};

/** Options of {@link pullModel}. */
export interface PullModelOptions {
    /** Called with each {@link PullEvent}. */
    readonly onProgress?: (event: PullEvent) => void;
    /** Cancels the pull; what is downloaded so far is kept, and the next pull resumes it. */
    readonly signal?: AbortSignal;
    /** Keep the downloaded checkpoint (in the model's folder, under `source/`) instead of deleting it. */
    readonly keepSource?: boolean;
    /** The cache folder (default {@link modelCacheDir}). */
    readonly cacheDir?: string;
    /** Where HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_OFFLINE are read from (default `process.env`). */
    readonly env?: NodeJS.ProcessEnv;
    /** CPU threads of the quantizer (default: all cores). */
    readonly threads?: number;
    /**
     * Load a ready GGUF once in a child process before accepting it, so that a file llama.cpp would abort on never
     * reaches the process that uses it. Default: on for GGUFs from anywhere but the official `Qwen/` repositories.
     */
    readonly isolate?: boolean;
}

/** The owner of the official Qwen3Guard repositories. */
const OFFICIAL_OWNER = "Qwen/";
/** The Hugging Face architecture of each variant. */
const ARCHITECTURES = {gen: "Qwen3ForCausalLM", stream: "Qwen3ForGuardModel"} as const;
/** Tokenizer files the converter reads (chat_template.jinja too, when the repository has one). */
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"];
const SAFETENSORS_INDEX = "model.safetensors.index.json";
/** A lock not refreshed for this long belongs to a dead process and is taken over. */
const LOCK_STALE_MS = 20_000;
/** Free space kept beyond the estimate. */
const SPACE_MARGIN = 64 << 20;

/**
 * Pull a model into the cache (or find it there).
 * @param name - `gen-0.6b`, `stream-4b:q4_k_m`, `hf:OWNER/REPO[@REV][:TYPE]`, `hf:OWNER/REPO[@REV]/FILE.gguf`, or
 *   an `https://` URL of a GGUF
 * @param options - progress, cancellation, cache folder, hub environment
 * @returns the cached model
 * @throws {ModelNameError} for a name that says no model
 * @throws {ModelNotCachedError} when it is not cached and HF_HUB_OFFLINE is set
 * @throws {HubAccessError | HubNotFoundError | HubUnreachableError} for the hub's refusals and network failures
 * @throws {NotAGuardModelError} for a repository or file that is not a Qwen3Guard model of the named variant
 * @throws {ChecksumMismatchError} for a download whose hash is wrong (deleted)
 * @throws {InsufficientSpaceError} when the cache lacks the space, before anything is downloaded
 * @example
 * const model = await pullModel("gen-0.6b", {onProgress: (event) => console.error(event)});
 * const gen = await GenGuard.load({model: model.path});
 */
export async function pullModel(name: string, options: PullModelOptions = {}): Promise<CachedModel> {
    const source = parseModelName(name);
    const cacheDir = options.cacheDir ?? modelCacheDir(options.env);
    const cached = await findCachedModel(source, cacheDir);
    if (cached !== undefined) {
        options.onProgress?.({event: "cached", name: source.name, path: cached.path});
        return cached;
    }
    const environment = hubEnvironment(options.env);
    if (environment.offline)
        throw new ModelNotCachedError(`${source.name} is not in the model cache (${cacheDir}) and HF_HUB_OFFLINE is set: ` +
            `run \`qwenguard pull ${name}\` while online`);

    const started = performance.now();
    const folder = cacheFolderName(source);
    // pulls of one repository share its downloads: they take turns
    const lockName = source.kind === "checkpoint" ? `hf-${source.repo.replace("/", "--")}` : folder;
    const lock = await acquireLock(path.join(cacheDir, ".locks", lockName), () => options.onProgress?.({event: "waiting", name: source.name}),
        options.signal);
    try {
        const done = await findCachedModel(source, cacheDir);
        if (done !== undefined) {
            options.onProgress?.({event: "cached", name: source.name, path: done.path});
            return done;
        }
        const signal = options.signal !== undefined ? AbortSignal.any([options.signal, lock.signal]) : lock.signal;
        const pull = new ModelPull(source, cacheDir, folder, new HubClient(environment), {...options, signal});
        const model = await pull.run();
        options.onProgress?.({event: "done", name: source.name, path: model.path, bytes: model.bytes, seconds: (performance.now() - started) / 1000});
        return model;
    } finally {
        await lock.release();
    }
}

/** A model made in the work folder, and the downloads it came from. */
interface PulledFiles {
    readonly manifest: ModelManifest;
    readonly downloads: string;
}

/** One pull, holding the lock. */
class ModelPull {
    private readonly work: string;

    public constructor(
        private readonly source: ModelSource,
        private readonly cacheDir: string,
        private readonly folder: string,
        private readonly hub: HubClient,
        private readonly options: PullModelOptions & {readonly signal: AbortSignal}
    ) {
        this.work = path.join(cacheDir, `.partial-${folder}-${process.pid}-${Date.now()}`);
    }

    public async run(): Promise<CachedModel> {
        // a conversion cut short (Ctrl-C, kill -9) leaves its folder: start it again
        for (const entry of await fs.readdir(this.cacheDir)) {
            if (entry.startsWith(`.partial-${this.folder}-`))
                await fs.rm(path.join(this.cacheDir, entry), {recursive: true, force: true});
        }
        await fs.mkdir(this.work, {recursive: true});
        try {
            const {manifest, downloads} = this.source.kind === "checkpoint" ? await this.pullCheckpoint(this.source) : await this.pullGguf(this.source);
            await fs.writeFile(path.join(this.work, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + "\n");
            // a pull cancelled during the conversion (or that lost its lock to another process) publishes nothing
            this.options.signal.throwIfAborted();
            const target = path.join(this.cacheDir, this.folder);
            await fs.rm(target, {recursive: true, force: true}); // an incomplete folder of an older version
            await fs.rename(this.work, target);
            // the downloads go only once the model is in place: a pull killed before that reuses them
            if (this.options.keepSource === true && this.source.kind === "checkpoint")
                await fs.rename(downloads, path.join(target, "source"));
            else
                await fs.rm(downloads, {recursive: true, force: true});
        } finally {
            await fs.rm(this.work, {recursive: true, force: true});
        }
        const model = await findCachedModel(this.source, this.cacheDir);
        if (model === undefined)
            throw new PullError(`${this.source.name} was pulled but its folder in ${this.cacheDir} is incomplete`);
        return model;
    }

    private async pullCheckpoint(source: Extract<ModelSource, {kind: "checkpoint"}>): Promise<PulledFiles> {
        const info = await this.hub.repoInfo(source.repo, source.revision, this.options.signal);
        const downloads = path.join(this.cacheDir, ".downloads", `${source.repo.replace("/", "--")}@${info.commit}`);
        const at = `${source.repo}@${info.commit.slice(0, 10)}`;

        // config.json (and the shard index) first: a repository that is no Qwen3Guard checkpoint is refused before
        // gigabytes are fetched
        const small = [requireFile(info, "config.json", "a Hugging Face checkpoint"),
            ...(info.files.has(SAFETENSORS_INDEX) ? [info.files.get(SAFETENSORS_INDEX)!] : [])];
        const first = await this.download(info, small, downloads);
        const config = await readJson(first[0].path, at);
        const variant = checkpointVariant(config, source, at);
        const weights = first.length > 1 ? shardNames(await readJson(first[1].path, at), at) : ["model.safetensors"];
        const rest = [...TOKENIZER_FILES.map((file) => requireFile(info, file, "a checkpoint with a tokenizer")),
            ...(info.files.has("chat_template.jinja") ? [info.files.get("chat_template.jinja")!] : []),
            ...weights.map((file) => requireFile(info, file, "the weights its index names"))];
        const weightBytes = weights.reduce((sum, file) => sum + Math.max(0, info.files.get(file)!.size), 0);
        // the GGUF is at most the checkpoint's size (F16, BF16), about half of it in q8_0; other types go through F16
        const direct = source.type === "q8_0" || source.type === "f16" || source.type === "bf16";
        await this.checkSpace([...small, ...rest], downloads, weightBytes * (source.type === "q8_0" ? 0.55 : direct ? 1 : 1.55), info.commit);
        const all = [...first, ...await this.download(info, rest, downloads)];

        this.options.onProgress?.({event: "convert", name: source.name, type: source.type});
        const modelPath = path.join(this.work, MODEL_FILE);
        const convertTo = direct ? modelPath : path.join(this.work, "f16", MODEL_FILE);
        await fs.mkdir(path.dirname(convertTo), {recursive: true});
        this.options.signal.throwIfAborted();
        await convert(downloads, {outFile: convertTo, outType: (direct ? source.type : "f16") as OutType, name: source.repo.split("/")[1]});
        if (!direct) {
            this.options.signal.throwIfAborted();
            await quantizeModel(convertTo, modelPath, source.type, {threads: this.options.threads,
                onProgress: ({bytesWritten}) => this.options.onProgress?.({event: "quantize", name: source.name, type: source.type, bytesWritten})});
            await fs.rm(path.dirname(convertTo), {recursive: true, force: true});
        }
        // a fine-tune's tokenizer and config.json values go into the GGUF as they are: loaded once in a child first
        if (this.options.isolate ?? !source.repo.startsWith(OFFICIAL_OWNER))
            await this.probe(modelPath);

        return {downloads, manifest: {
            manifestVersion: MANIFEST_VERSION, name: source.name, variant, type: source.type,
            source: {kind: "checkpoint", repo: source.repo, revision: source.revision ?? "main", commit: info.commit},
            downloaded: all.map(({file, size, sha256}) => ({file, size, sha256})),
            files: await this.modelFiles(), converterVersion: packageVersion(), pulledAt: new Date().toISOString()
        }};
    }

    /** Load a model once in a child process and judge with it; refuse it unless that went well. */
    private async probe(modelPath: string): Promise<void> {
        this.options.onProgress?.({event: "probe", name: this.source.name});
        const probe = await probeModel(modelPath);
        if (probe.outcome !== "loaded")
            throw new NotAGuardModelError(`${this.source.name} does not load: ` + (probe.outcome === "refused" ? probe.message
                : probe.outcome === "crashed" ? `llama.cpp aborts the process on it (${probe.message || probe.signal || probe.code}); the file is corrupt or hostile`
                    : "its load did not finish; the file is corrupt or hostile"));
        this.options.signal.throwIfAborted();
    }

    private async pullGguf(source: Extract<ModelSource, {kind: "hub-gguf" | "url"}>): Promise<PulledFiles> {
        const downloads = path.join(this.cacheDir, ".downloads", this.folder);
        let downloaded: DownloadedFile;
        let commit: string | undefined;
        if (source.kind === "hub-gguf") {
            const info = await this.hub.repoInfo(source.repo, source.revision, this.options.signal);
            commit = info.commit;
            const file = info.files.get(source.file);
            if (file === undefined) {
                const ggufs = [...info.files.keys()].filter((name) => name.endsWith(".gguf"));
                throw new HubNotFoundError(`${source.repo}@${info.commit.slice(0, 10)} has no file ${source.file}` +
                    (ggufs.length > 0 ? `; its GGUF files: ${ggufs.join(", ")}` : "; it holds no GGUF file"));
            }
            await this.checkSpace([{...file, name: MODEL_FILE}], downloads, 0, commit);
            // saved under a flat name: the file may sit in a folder of the repository
            [downloaded] = await this.downloadAll([{url: this.hub.fileUrl(info.repo, info.commit, file.name), file: MODEL_FILE, size: file.size,
                sha256: file.sha256, blobId: file.blobId}], downloads, this.hub.headers);
        } else {
            const size = await urlSize(source.url, this.options.signal);
            await this.checkSpace([{name: MODEL_FILE, size, sha256: undefined, blobId: undefined}], downloads, 0);
            [downloaded] = await this.downloadAll([{url: source.url, file: MODEL_FILE, size}], downloads);
        }

        // checked where it was downloaded: a pull killed during the probe does not download it again
        const {metadata} = await readGguf(downloaded.path);
        const architecture = metadata.find("general.architecture", GgufValueType.STRING);
        const variant = metadata.find("qwen3guard.variant", GgufValueType.STRING);
        if (variant === "stream-backbone" || variant === "stream-head")
            throw new NotAGuardModelError(`${source.name} is a Qwen3Guard-Stream ${variant === "stream-head" ? "head" : "backbone"} GGUF: ` +
                "pull the Stream checkpoint repository instead (hf:OWNER/REPO), which gives the backbone and its head together");
        if (architecture !== "qwen3")
            throw new NotAGuardModelError(`${source.name} is not a Qwen3Guard-Gen GGUF: its general.architecture is ${JSON.stringify(architecture)} (expected "qwen3")`);
        const official = source.kind === "hub-gguf" && source.repo.startsWith(OFFICIAL_OWNER);
        if (this.options.isolate ?? !official)
            await this.probe(downloaded.path);
        await fs.rename(downloaded.path, path.join(this.work, MODEL_FILE));
        return {downloads, manifest: {
            manifestVersion: MANIFEST_VERSION, name: source.name, variant: "gen", type: fileTypeName(metadata.find("general.file_type", GgufValueType.UINT32)),
            source: source.kind === "hub-gguf" ? {kind: source.kind, repo: source.repo, revision: source.revision ?? "main", commit, file: source.file}
                : {kind: source.kind, url: source.url},
            downloaded: [{file: source.kind === "hub-gguf" ? source.file : source.url, size: downloaded.size, sha256: downloaded.sha256}],
            files: await this.modelFiles(), pulledAt: new Date().toISOString()
        }};
    }

    /** Download files of a repository at its resolved commit. */
    private download(info: HubRepoInfo, files: readonly HubFile[], dir: string): Promise<DownloadedFile[]> {
        return this.downloadAll(files.map((file) => ({url: this.hub.fileUrl(info.repo, info.commit, file.name), file: file.name, size: file.size,
            sha256: file.sha256, blobId: file.blobId})), dir, this.hub.headers);
    }

    private downloadAll(downloads: readonly FileDownload[], dir: string, headers?: Record<string, string>): Promise<DownloadedFile[]> {
        const name = this.source.name;
        const report = this.options.onProgress;
        return downloadFiles(downloads, dir, {
            headers, signal: this.options.signal,
            onProgress: report && ((progress) => report({event: "progress", name, ...progress})),
            onFile: report && (({file, size, reused}) => report({event: "file", name, file, size, reused}))
        });
    }

    /**
     * Refuse a pull the disk cannot hold, before downloading: what is not yet downloaded into `dir`, plus `outputBytes`.
     * Also reports what is about to be fetched.
     */
    private async checkSpace(files: readonly HubFile[], dir: string, outputBytes: number, commit?: string): Promise<void> {
        let downloadBytes = 0;
        for (const file of files) {
            const size = (name: string) => fs.stat(path.join(dir, name)).then((stat) => stat.size, () => 0);
            // what an earlier pull downloaded (whole, or part of it) is not fetched again
            const have = await size(file.name) === file.size ? file.size : await size(`${file.name}${INCOMPLETE}`);
            downloadBytes += Math.max(0, file.size - have);
        }
        const totalBytes = files.reduce((sum, file) => sum + Math.max(0, file.size), 0);
        const source = this.source.kind === "url" ? this.source.url : this.source.repo;
        this.options.onProgress?.({event: "resolved", name: this.source.name, source, commit, files: files.length, totalBytes, downloadBytes});
        const needed = downloadBytes + outputBytes + SPACE_MARGIN;
        const stats = await fs.statfs(this.cacheDir);
        const free = stats.bavail * stats.bsize;
        if (needed > free)
            throw new InsufficientSpaceError(`Pulling ${this.source.name} needs about ${formatBytes(needed)} in ${this.cacheDir} ` +
                `(${formatBytes(downloadBytes)} to download, ${formatBytes(outputBytes)} for the conversion) but ${formatBytes(free)} is free`);
    }

    private async modelFiles(): Promise<ModelManifest["files"]> {
        const files = [];
        for (const file of [MODEL_FILE, "model.head.gguf"]) {
            const stat = await fs.stat(path.join(this.work, file)).catch(() => undefined);
            if (stat !== undefined)
                files.push({file, size: stat.size});
        }
        return files;
    }
}

function requireFile(info: HubRepoInfo, file: string, what: string): HubFile {
    const found = info.files.get(file);
    if (found === undefined)
        throw new NotAGuardModelError(`${info.repo}@${info.commit.slice(0, 10)} has no ${file}: it is not ${what}` +
            (file === "config.json" ? " (a GGUF in it is pulled as hf:OWNER/REPO/FILE.gguf)" : ""));
    return found;
}

async function readJson(file: string, at: string): Promise<Record<string, unknown>> {
    try {
        const value = JSON.parse(await fs.readFile(file, "utf8")) as unknown;
        if (typeof value === "object" && value !== null && !Array.isArray(value))
            return value as Record<string, unknown>;
    } catch {
        // reported below
    }
    throw new NotAGuardModelError(`${path.basename(file)} of ${at} is not a JSON object`);
}

/** The variant a config.json says, checked against the one the name asks for. */
function checkpointVariant(config: Record<string, unknown>, source: Extract<ModelSource, {kind: "checkpoint"}>, at: string): "gen" | "stream" {
    const architectures = config.architectures;
    const architecture = Array.isArray(architectures) ? architectures[0] as unknown : undefined;
    const variant = architecture === ARCHITECTURES.gen ? "gen" : architecture === ARCHITECTURES.stream ? "stream" : undefined;
    if (variant === undefined || !SUPPORTED_ARCHITECTURES.includes(architecture as string))
        throw new NotAGuardModelError(`${at} is not a Qwen3Guard checkpoint: its config.json names the architectures ${JSON.stringify(architectures ?? null)} ` +
            `(expected ${ARCHITECTURES.gen} for Gen or ${ARCHITECTURES.stream} for Stream)`);
    if (source.variant !== undefined && variant !== source.variant)
        throw new NotAGuardModelError(`${at} holds a Qwen3Guard-${variant === "gen" ? "Gen" : "Stream"} checkpoint (${architecture}), ` +
            `but ${source.name} names a ${source.variant === "gen" ? "Gen" : "Stream"} model`);
    return variant;
}

/** The shard files a safetensors index names. */
function shardNames(index: Record<string, unknown>, at: string): string[] {
    const map = index.weight_map;
    const names = typeof map === "object" && map !== null ? [...new Set(Object.values(map as Record<string, unknown>))] : [];
    if (names.length === 0 || names.some((name) => typeof name !== "string" || name.includes("/") || name.includes("\\") || !name.endsWith(".safetensors")))
        throw new NotAGuardModelError(`${SAFETENSORS_INDEX} of ${at} does not map the tensors to .safetensors files beside it`);
    return (names as string[]).sort();
}

/** The size of a URL's file (following redirects), which also proves it reachable before the download starts. */
async function urlSize(url: string, signal: AbortSignal): Promise<number> {
    let response: Response;
    try {
        response = await fetch(url, {method: "HEAD", signal: AbortSignal.any([signal, AbortSignal.timeout(30_000)])});
    } catch (error) {
        signal.throwIfAborted();
        const cause = (error as {cause?: {code?: string}}).cause;
        throw new HubUnreachableError(`Cannot reach ${url} (${cause?.code ?? (error as Error).message})`);
    }
    if (response.status === 404)
        throw new HubNotFoundError(`${url} does not exist (404)`);
    if (!response.ok)
        throw new HubUnreachableError(`${url} answered ${response.status} ${response.statusText}`);
    const size = Number(response.headers.get("content-length") ?? -1);
    return Number.isSafeInteger(size) && size >= 0 ? size : -1;
}

function fileTypeName(fileType: number | undefined): string {
    const entry = Object.entries(quantizationTypes).find(([, value]) => value === fileType);
    return entry !== undefined ? entry[0].toLowerCase() : fileType !== undefined ? `file type ${fileType}` : "unknown";
}

function formatBytes(bytes: number): string {
    return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** A held lock: released by `release`; `signal` aborts when another process took it over (this one stalled). */
interface HeldLock {
    readonly signal: AbortSignal;
    release(): Promise<void>;
}

/** Take the lock, waiting while a live process holds it; a lock left by a dead process goes stale and is taken over. */
async function acquireLock(lockPath: string, onWaiting: () => void, signal: AbortSignal | undefined): Promise<HeldLock> {
    await fs.mkdir(path.dirname(lockPath), {recursive: true});
    const lost = new AbortController();
    let waiting = false;
    for (;;) {
        signal?.throwIfAborted();
        try {
            const release = await lockfile.lock(lockPath, {
                realpath: false, stale: LOCK_STALE_MS, update: LOCK_STALE_MS / 4,
                onCompromised: (error) => lost.abort(new PullError(`Lost the pull lock ${lockPath} (${error.message}): another process took it over`))
            });
            return {signal: lost.signal, release: () => release().catch(() => undefined)};
        } catch (error) {
            if ((error as NodeJS.ErrnoException).code !== "ELOCKED")
                throw error;
        }
        if (!waiting) {
            waiting = true;
            onWaiting();
        }
        await sleep(250, undefined, {signal});
    }
}

