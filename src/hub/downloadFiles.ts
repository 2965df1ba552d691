// Downloads with resumable HTTP range requests, then checks every file against the hash the hub reports before anything
// uses it. A file is fetched into FILE.incomplete, appended to as bytes arrive, so what is on disk is exactly what has
// been received: a pull that is interrupted, killed or cut off asks for the rest with `Range: bytes=SIZE-`.
//
// Why not node-llama-cpp's downloader (ipull 3.9.5 underneath)? Tried first, it failed three of the issue's faults:
// after `kill -9` its resume trusted progress records written before the data they describe (the resumed file was
// corrupt), after an interrupt it started the file over, and with several connections per file a failed request left
// a promise rejection unhandled, which ends a Node process. It also cannot be told a file's size (it GETs each file to
// learn it) nor bound its retries (150). The transfer itself is a few lines of fetch; the hashes make it safe.

import {createHash} from "node:crypto";
import {createReadStream} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import {setTimeout as sleep} from "node:timers/promises";
import {ChecksumMismatchError, HubAccessError, HubNotFoundError, HubUnreachableError, InsufficientSpaceError} from "./errors.js";

/** One file to download. */
export interface FileDownload {
    readonly url: string;
    /** Its name in the download folder. */
    readonly file: string;
    /** Its size, when known (-1 when not). */
    readonly size: number;
    /** The sha256 it must have (LFS files). */
    readonly sha256?: string;
    /** The git blob id it must have (files outside LFS). */
    readonly blobId?: string;
}

/** Download progress, all files together. */
export interface DownloadProgress {
    readonly downloadedBytes: number;
    readonly totalBytes: number;
    /** Bytes per second since this download started (bytes resumed from an earlier pull not counted). */
    readonly bytesPerSecond: number;
}

/** What happened to one file. */
export interface DownloadedFile {
    readonly file: string;
    readonly path: string;
    readonly size: number;
    readonly sha256: string;
    /** Reused: it was already complete in the folder (a resumed pull). */
    readonly reused: boolean;
}

/** Options of {@link downloadFiles}. */
export interface DownloadFilesOptions {
    readonly headers?: Record<string, string>;
    readonly onProgress?: (progress: DownloadProgress) => void;
    readonly onFile?: (file: DownloadedFile) => void;
    readonly signal?: AbortSignal;
}

/**
 * Download files into a folder and check each against its hash. A file already complete in the folder (same size,
 * right hash) is not fetched again; a partial one (`FILE.incomplete`) is resumed where it stopped. Four files download at
 * once; the first failure stops the others (their bytes stay on disk).
 * @param downloads - the files
 * @param dir - the folder (created when missing)
 * @param options - request headers (the hub token), progress, abort signal
 * @returns the files, each with its sha256
 * @throws {ChecksumMismatchError} naming the file whose bytes do not match (it is deleted)
 * @throws {HubAccessError | HubNotFoundError | HubUnreachableError} for a download the server refuses or fails
 */
export async function downloadFiles(downloads: readonly FileDownload[], dir: string, options: DownloadFilesOptions = {}): Promise<DownloadedFile[]> {
    await fs.mkdir(dir, {recursive: true});
    const done = new Map<string, DownloadedFile>();
    for (const download of downloads) {
        const filePath = path.join(dir, download.file);
        const size = await fs.stat(filePath).then((stat) => stat.size, () => -1);
        if (size < 0 || (download.size >= 0 && size !== download.size))
            continue;
        const check = await checkFile(download, filePath);
        if (check.ok) {
            const reused: DownloadedFile = {file: download.file, path: filePath, size, sha256: check.sha256, reused: true};
            done.set(download.file, reused);
            options.onFile?.(reused);
        } else {
            await fs.rm(filePath, {force: true});
        }
    }

    const pending = downloads.filter(({file}) => !done.has(file));
    const total = downloads.reduce((sum, {size}) => sum + Math.max(0, size), 0);
    let received = [...done.values()].reduce((sum, {size}) => sum + size, 0);
    const resumedBytes: number[] = [];
    for (const download of pending)
        resumedBytes.push(await fs.stat(`${path.join(dir, download.file)}${INCOMPLETE}`).then((stat) => stat.size, () => 0));
    received += resumedBytes.reduce((sum, bytes) => sum + bytes, 0);
    const started = performance.now();
    const startBytes = received;
    let lastReport = 0;
    const onBytes = (count: number) => {
        received += count;
        const now = performance.now();
        if (options.onProgress !== undefined && (now - lastReport >= PROGRESS_INTERVAL_MS || received === total)) {
            lastReport = now;
            const seconds = (now - started) / 1000;
            options.onProgress({downloadedBytes: received, totalBytes: total, bytesPerSecond: seconds > 0 ? (received - startBytes) / seconds : 0});
        }
    };

    // PARALLEL_FILES at a time, each over one connection; the first failure stops the others
    const failure = new AbortController();
    const signal = options.signal !== undefined ? AbortSignal.any([options.signal, failure.signal]) : failure.signal;
    let next = 0;
    const lane = async () => {
        while (next < pending.length && !signal.aborted) {
            const download = pending[next++];
            const filePath = path.join(dir, download.file);
            const check = await fetchFile(download, filePath, {headers: options.headers ?? {}, signal, onBytes});
            const {size} = await fs.stat(filePath);
            if (!check.ok || (download.size >= 0 && size !== download.size)) {
                await fs.rm(filePath, {force: true});
                throw new ChecksumMismatchError(`${download.file} from ${download.url} is corrupt: ` +
                    (check.ok ? `expected ${download.size} bytes but got ${size}` : check.reason) + "; it has been deleted, pull again");
            }
            const downloaded: DownloadedFile = {file: download.file, path: filePath, size, sha256: check.sha256, reused: false};
            done.set(download.file, downloaded);
            options.onFile?.(downloaded);
        }
    };
    const lanes = Array.from({length: Math.min(PARALLEL_FILES, pending.length)}, () => lane().catch((error: unknown) => {
        if (!failure.signal.aborted)
            failure.abort(error);
    }));
    await Promise.all(lanes);
    options.signal?.throwIfAborted();
    if (failure.signal.aborted)
        throw failure.signal.reason;
    return downloads.map(({file}) => done.get(file)!);
}

/** The suffix of a file being downloaded. */
export const INCOMPLETE = ".incomplete";
const PARALLEL_FILES = 4;
const PROGRESS_INTERVAL_MS = 100;
/** Bytes written to disk at once. */
const WRITE_BLOCK = 1 << 20;
/** Attempts of a file without progress before the pull fails (a dropped connection is retried from where it stopped). */
const MAX_ATTEMPTS = 6;
/** A response that sends nothing for this long is abandoned and asked for again. */
const STALL_MS = 60_000;

/** A failure that retrying cannot fix. */
class FinalError extends Error {}

/**
 * Fetch one file into `filePath`, resuming `filePath.incomplete` when it exists. Retries (with backoff) a dropped
 * connection, a stall, 429 and 5xx, each time from the bytes already on disk; refuses 401 / 403 / 404 at once.
 */
async function fetchFile(download: FileDownload, filePath: string, options: {headers: Record<string, string>, signal: AbortSignal | undefined,
    onBytes: (count: number) => void}): Promise<FileCheck> {
    const partPath = `${filePath}${INCOMPLETE}`;
    let offset = await fs.stat(partPath).then((stat) => stat.size, () => 0);
    if (download.size >= 0 && offset > download.size) {
        await fs.rm(partPath, {force: true});
        offset = 0;
    }
    // what the first response said the file was (ETag or Last-Modified): a resume sends it as If-Range, so a file
    // changed in between is sent whole instead of a mismatched rest
    const validatorPath = `${partPath}.validator`;
    let validator = await fs.readFile(validatorPath, "utf8").catch(() => undefined);
    if (offset > 0 && validator === undefined && download.sha256 === undefined && download.blobId === undefined) {
        await fs.rm(partPath, {force: true}); // no hash and no validator: a resumed file could not be trusted
        offset = 0;
    }
    // hashed as written, so the file is read back only for the part an earlier pull wrote
    let digest = new FileDigest(download);
    if (offset > 0)
        await digest.updateFromFile(partPath);
    let failures = 0;
    for (;;) {
        if (download.size >= 0 && offset === download.size)
            break;
        options.signal?.throwIfAborted();
        const stall = new AbortController();
        let timer = setTimeout(() => stall.abort(new Error(`no data for ${STALL_MS / 1000} s`)), STALL_MS);
        const progressBefore = offset;
        try {
            const signals = [stall.signal, ...(options.signal !== undefined ? [options.signal] : [])];
            const range = offset > 0 ? {range: `bytes=${offset}-`, ...(validator !== undefined ? {"if-range": validator} : {})} : {};
            const response = await fetch(download.url, {headers: {...options.headers, ...range, "accept-encoding": "identity"}, signal: AbortSignal.any(signals)});
            if (offset > 0 && response.status === 416 && download.size < 0) {
                await response.body?.cancel();
                break; // the whole file was already there
            }
            if (offset > 0 && response.status === 416) {
                await response.body?.cancel();
                await fs.rm(partPath, {force: true});
                throw new FinalError("", {cause: new HubUnreachableError(`${download.url} holds fewer bytes than the ${download.size} the hub reports ` +
                    `(a range from byte ${offset} was refused with 416)`)});
            }
            if (!response.ok)
                throw statusError(response.status, download.url, await response.text().catch(() => ""), "authorization" in options.headers);
            const resumed = offset > 0 && response.status === 206;
            if (offset > 0 && !resumed) {
                offset = 0; // the server ignored the range, or the file changed: start over
                digest = new FileDigest(download);
            } else if (resumed) {
                const start = /^bytes (\d+)-/.exec(response.headers.get("content-range") ?? "")?.[1];
                if (Number(start) !== offset) {
                    await response.body?.cancel();
                    throw new FinalError("", {cause: new HubUnreachableError(`${download.url} answered a range request for bytes ${offset}- with ` +
                        `${response.headers.get("content-range") ?? "no Content-Range"}`)});
                }
            }
            if (!resumed) {
                const etag = response.headers.get("etag");
                validator = (etag !== null && !etag.startsWith("W/") ? etag : response.headers.get("last-modified")) ?? undefined;
                if (validator !== undefined)
                    await fs.writeFile(validatorPath, validator);
                else
                    await fs.rm(validatorPath, {force: true});
            }
            const handle = await fs.open(partPath, resumed ? "a" : "w");
            // received bytes are written (and hashed) in blocks; on any error the block so far is still written
            let block: Uint8Array[] = [];
            let blockBytes = 0;
            const flush = async () => {
                if (blockBytes === 0)
                    return;
                const bytes = Buffer.concat(block, blockBytes);
                block = [];
                blockBytes = 0;
                await handle.write(bytes);
                digest.update(bytes);
                offset += bytes.byteLength;
            };
            try {
                for await (const chunk of response.body ?? []) {
                    block.push(chunk as Uint8Array);
                    blockBytes += (chunk as Uint8Array).byteLength;
                    options.onBytes((chunk as Uint8Array).byteLength);
                    if (blockBytes >= WRITE_BLOCK)
                        await flush();
                    clearTimeout(timer);
                    timer = setTimeout(() => stall.abort(new Error(`no data for ${STALL_MS / 1000} s`)), STALL_MS);
                }
            } finally {
                await flush().finally(() => handle.close());
            }
            if (download.size >= 0 && offset > download.size) {
                await fs.rm(partPath, {force: true});
                throw new FinalError("", {cause: new HubUnreachableError(`${download.url} sent ${offset} bytes, more than the ${download.size} the hub reports`)});
            }
            if (download.size >= 0 && offset < download.size)
                throw new Error(`the response ended after ${offset} of ${download.size} bytes`); // retried below, from there
        } catch (error) {
            if (options.signal?.aborted)
                throw options.signal.reason;
            if (error instanceof FinalError)
                throw error.cause instanceof Error ? error.cause : error;
            if ((error as NodeJS.ErrnoException).code === "ENOSPC")
                throw new InsufficientSpaceError(`The disk filled up while downloading ${download.file}: free some space and pull again (it resumes)`);
            if ((error as NodeJS.ErrnoException).syscall !== undefined)
                throw error; // the cache folder cannot be written: retrying will not help
            failures = offset > progressBefore ? 1 : failures + 1;
            if (failures >= MAX_ATTEMPTS)
                throw new HubUnreachableError(`Downloading ${download.url} failed ${failures} times in a row (${describeCause(error)}); ` +
                    `${offset} of ${download.size >= 0 ? download.size : "?"} bytes are kept and the next pull resumes there`);
            await sleep(Math.min(30_000, 500 * 2 ** (failures - 1)), undefined, options.signal !== undefined ? {signal: options.signal} : {});
            continue;
        } finally {
            clearTimeout(timer);
        }
        break;
    }
    if (offset === 0)
        await fs.writeFile(partPath, ""); // an empty file: no body was ever written
    await fs.rename(partPath, filePath);
    await fs.rm(validatorPath, {force: true});
    return digest.verdict();
}

/** An HTTP refusal as a pull error (final for 4xx, retried for 429 and 5xx). */
function statusError(status: number, url: string, body: string, authorized: boolean): Error {
    const detail = body.trim().slice(0, 200);
    if (status === 401 || status === 403)
        return new FinalError("", {cause: new HubAccessError(`${url} refused access (${status}): ` +
            (authorized ? "the token has no access to it (accept the model's terms on the hub, or use another token)" : "set HF_TOKEN to a token with access to it"))});
    if (status === 404)
        return new FinalError("", {cause: new HubNotFoundError(`${url} does not exist (404)`)});
    if (status === 429 || status >= 500)
        return new Error(`${status}${detail ? `: ${detail}` : ""}`);
    return new FinalError("", {cause: new HubUnreachableError(`${url} answered ${status}${detail ? `: ${detail}` : ""}`)});
}

function describeCause(error: unknown): string {
    const cause = (error as {cause?: {code?: string, message?: string}}).cause;
    return cause?.code ?? cause?.message ?? (error as Error).message ?? String(error);
}

type FileCheck = {ok: true, sha256: string} | {ok: false, reason: string};

/** The hashes of a file as its bytes go by: sha256, and the git blob sha1 when that is what the hub gives. */
class FileDigest {
    private readonly sha256 = createHash("sha256");
    private readonly blob: ReturnType<typeof createHash> | undefined;

    public constructor(private readonly download: FileDownload) {
        this.blob = download.sha256 === undefined && download.blobId !== undefined && download.size >= 0
            ? createHash("sha1").update(`blob ${download.size}\0`) : undefined;
    }

    public update(bytes: Uint8Array): void {
        this.sha256.update(bytes);
        this.blob?.update(bytes);
    }

    /** Hash what is in a file already (a resumed download's first part, or a whole file). */
    public async updateFromFile(filePath: string): Promise<void> {
        for await (const chunk of createReadStream(filePath, {highWaterMark: 1 << 20}))
            this.update(chunk as Buffer);
    }

    public verdict(): FileCheck {
        const sha256 = this.sha256.digest("hex");
        if (this.download.sha256 !== undefined && sha256 !== this.download.sha256)
            return {ok: false, reason: `expected sha256 ${this.download.sha256} (as the hub reports) but got ${sha256}`};
        const blobId = this.blob?.digest("hex");
        if (blobId !== undefined && blobId !== this.download.blobId)
            return {ok: false, reason: `expected git blob ${this.download.blobId} (as the hub reports) but got ${blobId}`};
        return {ok: true, sha256};
    }
}

/** Hash a complete file and compare. */
async function checkFile(download: FileDownload, filePath: string): Promise<FileCheck> {
    const digest = new FileDigest(download);
    await digest.updateFromFile(filePath);
    return digest.verdict();
}
