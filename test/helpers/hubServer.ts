// A local stand-in for the Hugging Face hub, for tests of the model downloader (`qwenguard pull`): a node:http server on
// 127.0.0.1 that speaks the hub's protocol as huggingface_hub meets it. Model info (`/api/models/...`, with `?blobs=true`
// sizes, git blob ids and LFS sha256), `resolve` URLs that serve regular git files themselves and redirect LFS files to a
// CDN route, byte ranges, gated repos, and the hub's error replies (status, `X-Error-Code`, `X-Error-Message`). Tests can
// break transfers on purpose (drop the connection, throttle, corrupt a byte, misreport a size) and read back every
// request and how many body bytes really left the server.

import {createHash} from "node:crypto";
import {createReadStream} from "node:fs";
import {open, readdir, stat} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import http from "node:http";
import type {IncomingMessage, ServerResponse} from "node:http";
import type {AddressInfo, Socket} from "node:net";
import path from "node:path";

/** One model repository the server hosts. */
export interface HubRepoSpec {
    /** "Owner/Name", e.g. "Qwen/Qwen3Guard-Gen-0.6B" */
    id: string;
    /** a local directory: every top-level regular file in it (symbolic links followed) is a file of the repo, streamed from disk */
    dir?: string;
    /** extra or overriding in-memory files; a name may contain "/" (a file in a folder of the repo) */
    files?: Record<string, Uint8Array | string>;
    /** the commit of "main" (40 lowercase hex); default: a deterministic sha1 of the id and the file names and sizes */
    commit?: string;
    /**
     * More revisions: name (branch or tag, may contain "/", e.g. "refs/pr/1") → commit. The same files are served at
     * every known revision, and a 40-hex commit that is one of the known commits is also a valid revision.
     */
    revisions?: Record<string, string>;
    /** the repo's files require `Authorization: Bearer <token>` (the server's token); its model info stays public, as on the hub */
    gated?: boolean;
}

/** Misbehaviours a test switches on and off between steps; each names a file (by its name in the repo, in any repo). */
export interface HubFaults {
    /** destroy the socket after this many body bytes of `file` in each of the next `times` download requests (decremented per request) */
    dropAfter?: {file: string, bytes: number, times: number};
    /**
     * send `file` at most this many bytes per second (in small chunks with timers); 0 stalls the transfer (headers sent,
     * no body) until the fault changes. Read before every chunk, so changing or clearing it affects a transfer in flight.
     */
    throttle?: {file: string, bytesPerSecond: number};
    /** serve `file` with one byte flipped (the byte at offset floor(size / 2)), while size, sha256 and ETag still describe the original */
    corrupt?: {file: string};
    /** report this size (`size`, `lfs.size`, `X-Linked-Size`) for `file` in the model info and the resolve redirect, without changing the bytes served or Content-Length */
    reportSize?: {file: string, size: number};
}

/** One request the server received. */
export interface HubRequestLog {
    method: string;
    /** the request target as sent: path and query, still URL-encoded */
    path: string;
    /** the Range header, when sent */
    range?: string;
    /** the Authorization header, when sent */
    authorization?: string;
    /** the status of the reply; 0 while no reply head has been written yet */
    status: number;
}

/** A running local hub. */
export interface HubServer {
    /** "http://127.0.0.1:PORT" (no trailing slash): what a client sets as HF_ENDPOINT */
    readonly url: string;
    /**
     * Body bytes of file downloads (regular files from `resolve`, LFS files from the CDN route) handed to the operating
     * system so far, over all repos, or for one file name when given. Counted as each chunk is flushed to the socket, and
     * the next chunk waits for `drain`, so an unread or aborted response does not count its unsent remainder.
     */
    bytesSent(file?: string): number;
    /** every request received, in order of arrival */
    readonly requests: HubRequestLog[];
    /** mutable: tests set and clear faults between steps */
    faults: HubFaults;
    /**
     * What the hub knows of a file's true bytes.
     * @param repo the repo id, "Owner/Name"
     * @param file the file's name in the repo
     * @returns the sha256 (hex), the git blob sha1 of the content (hex, `sha1("blob <size>\0" + bytes)`) and the size
     * @throws when the repo or the file is unknown
     */
    digest(repo: string, file: string): {sha256: string, blobId: string, size: number};
    /** Stop listening and destroy every open connection (a throttled or hung transfer does not keep it open). */
    close(): Promise<void>;
}

/** Files the hub keeps in Git LFS by their extension; any file of at least LFS_MIN_SIZE bytes is kept there too. */
const LFS_EXTENSIONS = [".safetensors", ".gguf", ".bin"];
const LFS_MIN_SIZE = 10 * 1024 * 1024;
/** The most body bytes written to a socket at once. */
const CHUNK_SIZE = 64 * 1024;
/** A throttled file goes out in this many chunks a second. */
const THROTTLE_CHUNKS_PER_SECOND = 20;
/** How often a transfer stalled by a throttle of 0 bytes per second looks at the faults again. */
const STALL_POLL_MS = 20;
/** The `lastModified` and `createdAt` of every repo, fixed so that replies are deterministic. */
const REPO_DATE = "2025-01-01T00:00:00.000Z";
const COMMIT_PATTERN = /^[0-9a-f]{40}$/;
const NOT_FOUND_MESSAGE = "Sorry, we can't find the page you are looking for.";

/** A file of a repo, with the digests computed when the server starts. */
interface RepoFile {
    name: string;
    size: number;
    sha256: string;
    /** the git blob id of the content */
    blobId: string;
    /** for an LFS file, the git blob id of the pointer file git stores in its place, and the pointer's size */
    pointer?: {blobId: string, size: number};
    /** the bytes, for an in-memory file */
    bytes?: Uint8Array;
    /** where to read the bytes, for a file of `dir` */
    filePath?: string;
}

interface Repo {
    id: string;
    gated: boolean;
    /** by name, in name order */
    files: Map<string, RepoFile>;
    /** every valid revision (branch, tag, known commit) → its commit */
    revisions: Map<string, string>;
    /** the `_id` of the model info, a deterministic 24-hex object id */
    objectId: string;
}

/** A request being answered, with its log entry. */
interface Exchange {
    req: IncomingMessage;
    res: ServerResponse;
    log: HubRequestLog;
}

/** An error reply as the hub sends it. */
interface HubError {
    status: number;
    /** the X-Error-Code header, when the hub sends one */
    code?: string;
    message: string;
}

/**
 * Start a local hub on 127.0.0.1 on a free port. Digests of every file are computed before it listens (files of `dir`
 * are read once for that and streamed from disk on every download).
 * @param options.repos the repos it hosts; ids must be distinct "Owner/Name"
 * @param options.token the token that opens gated repos (`Authorization: Bearer <token>`); required when a repo is gated
 * @returns the running server; `close()` it when done
 * @throws when a repo spec is invalid (naming the repo and the field) or a file of `dir` cannot be read
 * @example
 * const hub = await startHubServer({repos: [{id: "Qwen/Tiny", files: {"config.json": "{}"}}]});
 * process.env.HF_ENDPOINT = hub.url;
 * // ... download ...
 * await hub.close();
 */
export async function startHubServer(options: {repos: HubRepoSpec[], token?: string}): Promise<HubServer> {
    const repos = new Map<string, Repo>();
    for (const spec of options.repos) {
        if (repos.has(spec.id))
            throw new Error(`Expected distinct repo ids but "${spec.id}" appears twice`);
        if (spec.gated === true && (options.token === undefined || options.token === ""))
            throw new Error(`Expected a "token" option because repo "${spec.id}" is gated but received ${JSON.stringify(options.token)}`);
        repos.set(spec.id, await loadRepo(spec));
    }
    const server = new LocalHubServer(repos, options.token);
    await server.listen();
    return server;
}

class LocalHubServer implements HubServer {
    readonly requests: HubRequestLog[] = [];
    faults: HubFaults = {};
    private readonly repos: Map<string, Repo>;
    private readonly token: string | undefined;
    private readonly server: http.Server;
    private readonly sockets = new Set<Socket>();
    private readonly sent = new Map<string, number>();
    private origin = "";
    private closing: Promise<void> | undefined;

    constructor(repos: Map<string, Repo>, token: string | undefined) {
        this.repos = repos;
        this.token = token;
        this.server = http.createServer((req, res) => this.handle(req, res));
        this.server.on("connection", (socket: Socket) => {
            this.sockets.add(socket);
            socket.once("close", () => this.sockets.delete(socket));
        });
    }

    get url(): string {
        return this.origin;
    }

    listen(): Promise<void> {
        return new Promise((resolve, reject) => {
            this.server.once("error", reject);
            this.server.listen(0, "127.0.0.1", () => {
                this.server.off("error", reject);
                this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
                resolve();
            });
        });
    }

    bytesSent(file?: string): number {
        if (file !== undefined)
            return this.sent.get(file) ?? 0;
        let total = 0;
        for (const bytes of this.sent.values())
            total += bytes;
        return total;
    }

    digest(repo: string, file: string): {sha256: string, blobId: string, size: number} {
        const found = this.repos.get(repo);
        if (found === undefined)
            throw new Error(`Expected one of the repos ${[...this.repos.keys()].join(", ")} but received "${repo}"`);
        const entry = found.files.get(file);
        if (entry === undefined)
            throw new Error(`Expected a file of repo "${repo}" (${[...found.files.keys()].join(", ")}) but received "${file}"`);
        return {sha256: entry.sha256, blobId: entry.blobId, size: entry.size};
    }

    close(): Promise<void> {
        this.closing ??= new Promise((resolve, reject) => {
            this.server.close((error) => error === undefined ? resolve() : reject(error));
            for (const socket of this.sockets)
                socket.destroy();
        });
        return this.closing;
    }

    private handle(req: IncomingMessage, res: ServerResponse): void {
        const log: HubRequestLog = {method: req.method ?? "", path: req.url ?? "", status: 0};
        if (req.headers.range !== undefined)
            log.range = req.headers.range;
        if (req.headers.authorization !== undefined)
            log.authorization = req.headers.authorization;
        this.requests.push(log);
        const exchange: Exchange = {req, res, log};
        this.route(exchange).catch((error: unknown) => {
            if (!res.headersSent && !req.socket.destroyed)
                sendJson(exchange, 500, {error: `hubServer: ${error instanceof Error ? error.message : String(error)}`});
            else
                req.socket.destroy();
        });
    }

    private async route(exchange: Exchange): Promise<void> {
        const {req} = exchange;
        const target = req.url ?? "/";
        const queryStart = target.indexOf("?");
        const query = new URLSearchParams(queryStart < 0 ? "" : target.slice(queryStart + 1));
        const segments = decodeSegments(queryStart < 0 ? target : target.slice(0, queryStart));
        const isRead = req.method === "GET" || req.method === "HEAD";
        if (segments === undefined || !isRead)
            return sendJson(exchange, 404, {error: NOT_FOUND_MESSAGE});

        if (segments[0] === "api" && segments[1] === "models" && segments.length >= 4) {
            if (segments.length === 4)
                return this.modelInfo(exchange, segments[2], segments[3], "main", query);
            if (segments[4] === "revision" && segments.length >= 6)
                return this.modelInfo(exchange, segments[2], segments[3], segments.slice(5).join("/"), query);
        }
        if (segments[0] === "cdn" && segments.length === 2)
            return this.cdn(exchange, segments[1], query);
        if (segments.length >= 5 && segments[2] === "resolve")
            return this.resolve(exchange, segments[0], segments[1], segments.slice(3));
        return sendJson(exchange, 404, {error: NOT_FOUND_MESSAGE});
    }

    /** `GET /api/models/{owner}/{name}[/revision/{rev}][?blobs=true]`. Public for gated repos too, as on the hub. */
    private modelInfo(exchange: Exchange, owner: string, name: string, revision: string, query: URLSearchParams): void {
        const repo = this.repos.get(`${owner}/${name}`);
        if (repo === undefined)
            return sendError(exchange, this.repoNotFound(exchange));
        const commit = repo.revisions.get(revision);
        if (commit === undefined)
            return sendError(exchange, revisionNotFound(revision));
        const blobs = /^(true|1)$/i.test(query.get("blobs") ?? "");
        const siblings = [...repo.files.values()].map((file) => {
            if (!blobs)
                return {rfilename: file.name};
            const size = this.faults.reportSize?.file === file.name ? this.faults.reportSize.size : file.size;
            if (file.pointer === undefined)
                return {rfilename: file.name, size, blobId: file.blobId};
            return {rfilename: file.name, size, blobId: file.pointer.blobId, lfs: {sha256: file.sha256, size, pointerSize: file.pointer.size}};
        });
        sendJson(exchange, 200, {
            _id: repo.objectId,
            id: repo.id,
            modelId: repo.id,
            author: owner,
            sha: commit,
            private: false,
            gated: repo.gated ? "manual" : false,
            disabled: false,
            lastModified: REPO_DATE,
            createdAt: REPO_DATE,
            downloads: 0,
            likes: 0,
            tags: [],
            siblings
        });
    }

    /** `GET|HEAD /{owner}/{name}/resolve/{rev}/{file}`: a regular file's bytes, or a redirect to the CDN for an LFS file. */
    private async resolve(exchange: Exchange, owner: string, name: string, rest: string[]): Promise<void> {
        const repo = this.repos.get(`${owner}/${name}`);
        if (repo === undefined)
            return sendError(exchange, this.repoNotFound(exchange));
        const denied = this.checkAccess(exchange, repo);
        if (denied !== undefined)
            return sendError(exchange, denied);

        // the revision is normally one URL-encoded segment; an unencoded one ("refs/pr/1") spans several
        let revision: string | undefined;
        let fileName = "";
        for (let split = 1; split < rest.length && revision === undefined; split++) {
            const candidate = rest.slice(0, split).join("/");
            if (repo.revisions.has(candidate)) {
                revision = candidate;
                fileName = rest.slice(split).join("/");
            }
        }
        if (revision === undefined)
            return sendError(exchange, revisionNotFound(rest[0]));
        const commit = repo.revisions.get(revision) as string;
        const file = repo.files.get(fileName);
        if (file === undefined)
            return sendError(exchange, {status: 404, code: "EntryNotFound", message: `${fileName} does not exist on "${revision}"`});

        if (file.pointer !== undefined) {
            const size = this.faults.reportSize?.file === file.name ? this.faults.reportSize.size : file.size;
            const location = `${this.origin}/cdn/${file.sha256}?repo=${encodeURIComponent(repo.id)}&file=${encodeURIComponent(file.name)}`;
            writeHead(exchange, 302, {
                "Location": location,
                "X-Repo-Commit": commit,
                "ETag": `"${file.sha256}"`,
                "X-Linked-Etag": `"${file.sha256}"`,
                "X-Linked-Size": String(size),
                "Content-Length": "0"
            });
            exchange.res.end();
            return;
        }
        await this.serveBytes(exchange, file, {
            "X-Repo-Commit": commit,
            "ETag": `"${file.blobId}"`,
            "Content-Type": "application/octet-stream",
            "Content-Disposition": disposition("inline", file.name)
        });
    }

    /** `GET|HEAD /cdn/{sha256}?repo=&file=`: an LFS file's bytes; no authorization (signed URLs on the hub). */
    private async cdn(exchange: Exchange, sha256: string, query: URLSearchParams): Promise<void> {
        // the file the redirect named, else any file with these bytes
        let file = this.repos.get(query.get("repo") ?? "")?.files.get(query.get("file") ?? "");
        if (file?.sha256 !== sha256) {
            file = undefined;
            for (const repo of this.repos.values()) {
                for (const candidate of repo.files.values()) {
                    if (file === undefined && candidate.sha256 === sha256 && candidate.pointer !== undefined)
                        file = candidate;
                }
            }
        }
        if (file === undefined)
            return sendJson(exchange, 404, {error: NOT_FOUND_MESSAGE});
        await this.serveBytes(exchange, file, {
            "ETag": `"${file.sha256}"`,
            "Content-Type": "application/octet-stream",
            "Content-Disposition": disposition("attachment", file.name)
        });
    }

    /** A file's bytes (or the range asked for) with `headers`, applying the faults to the body. */
    private async serveBytes(exchange: Exchange, file: RepoFile, headers: Record<string, string>): Promise<void> {
        const {req, res} = exchange;
        const range = parseRange(req.headers.range, file.size);
        if (range === "unsatisfiable") {
            writeHead(exchange, 416, {...headers, "Accept-Ranges": "bytes", "Content-Range": `bytes */${file.size}`, "Content-Length": "0"});
            res.end();
            return;
        }
        const start = range?.start ?? 0;
        const end = range?.end ?? file.size;
        const bodyHeaders: Record<string, string> = {...headers, "Accept-Ranges": "bytes", "Content-Length": String(end - start)};
        if (range !== undefined)
            bodyHeaders["Content-Range"] = `bytes ${start}-${end - 1}/${file.size}`;
        writeHead(exchange, range === undefined ? 200 : 206, bodyHeaders);
        if (req.method === "HEAD" || start === end) {
            res.end();
            return;
        }
        await this.streamBody(exchange, file, start, end);
    }

    /** Write bytes [start, end) of `file` in chunks, waiting for `drain`, stopping when the client goes away. */
    private async streamBody(exchange: Exchange, file: RepoFile, start: number, end: number): Promise<void> {
        const {req, res} = exchange;
        const socket = req.socket;
        const dropAfter = this.takeDrop(file.name);
        const dropAt = dropAfter !== undefined && dropAfter < end - start ? dropAfter : undefined;
        const corruptAt = this.faults.corrupt?.file === file.name ? Math.floor(file.size / 2) : -1;
        const handle = file.filePath === undefined ? undefined : await open(file.filePath, "r");
        try {
            res.flushHeaders();
            if (dropAt === 0) {
                await delay(socket, 0);
                socket.destroy();
                return;
            }
            let position = start;
            while (position < end && !socket.destroyed) {
                const throttle = this.faults.throttle?.file === file.name ? this.faults.throttle.bytesPerSecond : undefined;
                if (throttle !== undefined && !(throttle > 0)) {
                    await delay(socket, STALL_POLL_MS);  // stalled until the fault changes
                    continue;
                }
                let length = Math.min(CHUNK_SIZE, end - position);
                if (throttle !== undefined)
                    length = Math.min(length, Math.max(1, Math.floor(throttle / THROTTLE_CHUNKS_PER_SECOND)));
                if (dropAt !== undefined)
                    length = Math.min(length, start + dropAt - position);
                const chunk = await readChunk(file, handle, position, length);
                if (corruptAt >= position && corruptAt < position + length)
                    chunk[corruptAt - position] ^= 0xff;
                if (throttle !== undefined)
                    await delay(socket, length * 1000 / throttle);
                if (socket.destroyed)
                    break;
                let flushed = () => {};
                const written = new Promise<void>((resolve) => flushed = resolve);
                const ok = res.write(chunk, (error) => {
                    if (error == null)
                        this.sent.set(file.name, (this.sent.get(file.name) ?? 0) + length);
                    flushed();
                });
                position += length;
                if (dropAt !== undefined && position - start === dropAt) {
                    await untilDone(socket, written);  // the client gets exactly dropAt bytes before the reset
                    socket.destroy();
                    return;
                }
                if (!ok)
                    await untilDone(socket, new Promise<void>((resolve) => res.once("drain", resolve)));
            }
            if (!socket.destroyed)
                res.end();
        } finally {
            await handle?.close();
        }
    }

    /** The bytes after which this download of `file` is cut, consuming one of the `dropAfter` fault's times. */
    private takeDrop(fileName: string): number | undefined {
        const drop = this.faults.dropAfter;
        if (drop === undefined || drop.file !== fileName || drop.times <= 0)
            return undefined;
        drop.times--;
        return drop.bytes;
    }

    /** Why a gated repo's files are refused to this request, if they are. */
    private checkAccess(exchange: Exchange, repo: Repo): HubError | undefined {
        if (!repo.gated)
            return undefined;
        const authorization = exchange.req.headers.authorization;
        if (authorization === undefined)
            return {
                status: 401,
                code: "GatedRepo",
                message: `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`
            };
        if (authorization !== `Bearer ${this.token}`)
            return {status: 403, code: "GatedRepo", message: `Access to model ${repo.id} is restricted and you are not in the authorized list.`};
        return undefined;
    }

    /** 401 without an Authorization header and 404 with one, as the hub hides private repos. */
    private repoNotFound(exchange: Exchange): HubError {
        return {
            status: exchange.req.headers.authorization === undefined ? 401 : 404,
            code: "RepoNotFound",
            message: `Repository Not Found for url: ${this.origin}${exchange.req.url ?? ""}.`
        };
    }
}

async function loadRepo(spec: HubRepoSpec): Promise<Repo> {
    if (typeof spec.id !== "string" || !/^[^/\s]+\/[^/\s]+$/.test(spec.id))
        throw new Error(`Expected "Owner/Name" for the "id" of a repo but received ${JSON.stringify(spec.id)}`);
    const sources = new Map<string, {size: number, bytes?: Uint8Array, filePath?: string}>();
    if (spec.dir !== undefined) {
        for (const entry of await readdir(spec.dir)) {
            const filePath = path.join(spec.dir, entry);
            const info = await stat(filePath);
            if (info.isFile())
                sources.set(entry, {size: info.size, filePath});
        }
    }
    for (const [name, content] of Object.entries(spec.files ?? {})) {
        if (name === "" || name.startsWith("/") || name.endsWith("/") || name.split("/").some((part) => part === "" || part === "." || part === ".."))
            throw new Error(`Expected a relative file path for a file of repo "${spec.id}" but received ${JSON.stringify(name)}`);
        const bytes = typeof content === "string" ? Buffer.from(content, "utf8") : content;
        sources.set(name, {size: bytes.byteLength, bytes});
    }
    const names = [...sources.keys()].sort();

    const files = new Map<string, RepoFile>();
    for (const name of names) {
        const source = sources.get(name)!;
        const {sha256, blobId} = source.bytes !== undefined
            ? {sha256: hex("sha256", source.bytes), blobId: gitBlobId(source.bytes)}
            : await hashFile(source.filePath!, source.size);
        const file: RepoFile = {name, size: source.size, sha256, blobId, bytes: source.bytes, filePath: source.filePath};
        if (isLfs(name, source.size)) {
            const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${source.size}\n`);
            file.pointer = {blobId: gitBlobId(pointer), size: pointer.byteLength};
        }
        files.set(name, file);
    }

    const listing = names.map((name) => `${name}\t${sources.get(name)!.size}\n`).join("");
    const main = spec.commit ?? spec.revisions?.main ?? hex("sha1", Buffer.from(`${spec.id}\n${listing}`));
    const revisions = new Map<string, string>([["main", main]]);
    for (const [name, commit] of Object.entries({...spec.revisions, main})) {
        if (!COMMIT_PATTERN.test(commit))
            throw new Error(`Expected 40 lowercase hex digits for the commit of revision "${name}" of repo "${spec.id}" but received ${JSON.stringify(commit)}`);
        if (name === "main" && spec.revisions?.main !== undefined && spec.revisions.main !== main)
            throw new Error(`Expected the same commit for "commit" and revisions.main of repo "${spec.id}" but received ${main} and ${spec.revisions.main}`);
        revisions.set(name, commit);
    }
    for (const commit of [...revisions.values()])
        revisions.set(commit, commit);

    return {id: spec.id, gated: spec.gated === true, files, revisions, objectId: hex("sha1", Buffer.from(spec.id)).slice(0, 24)};
}

function isLfs(name: string, size: number): boolean {
    return size >= LFS_MIN_SIZE || LFS_EXTENSIONS.some((extension) => name.endsWith(extension));
}

function hex(algorithm: "sha1" | "sha256", bytes: Uint8Array): string {
    return createHash(algorithm).update(bytes).digest("hex");
}

/** The git blob id: sha1 of `blob <size>\0` and the bytes. */
function gitBlobId(bytes: Uint8Array): string {
    return createHash("sha1").update(`blob ${bytes.byteLength}\0`).update(bytes).digest("hex");
}

async function hashFile(filePath: string, size: number): Promise<{sha256: string, blobId: string}> {
    const sha256 = createHash("sha256");
    const sha1 = createHash("sha1").update(`blob ${size}\0`);
    let read = 0;
    for await (const chunk of createReadStream(filePath) as AsyncIterable<Buffer>) {
        sha256.update(chunk);
        sha1.update(chunk);
        read += chunk.byteLength;
    }
    if (read !== size)
        throw new Error(`Expected ${size} bytes in ${filePath} but read ${read} (did it change while the hub server started?)`);
    return {sha256: sha256.digest("hex"), blobId: sha1.digest("hex")};
}

/** A fresh buffer with bytes [position, position + length) of `file` (fresh, so that a fault may change it). */
async function readChunk(file: RepoFile, handle: FileHandle | undefined, position: number, length: number): Promise<Buffer> {
    if (file.bytes !== undefined)
        return Buffer.from(file.bytes.subarray(position, position + length));
    const buffer = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
        const {bytesRead} = await handle!.read(buffer, filled, length - filled, position + filled);
        if (bytesRead === 0)
            throw new Error(`Expected ${file.size} bytes in ${file.filePath} but it ended at ${position + filled}`);
        filled += bytesRead;
    }
    return buffer;
}

/**
 * The range a `Range` header asks for, as the hub's CDN reads it: `bytes=a-b`, `bytes=a-`, `bytes=-n`. Undefined when
 * there is none or it is not one valid range (the whole file is sent, as RFC 9110 says), "unsatisfiable" when it starts
 * at or past the end.
 */
function parseRange(header: string | undefined, size: number): {start: number, end: number} | "unsatisfiable" | undefined {
    const match = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim());
    if (match === null || (match[1] === "" && match[2] === ""))
        return undefined;
    if (match[1] === "") {
        const suffix = Number(match[2]);
        if (suffix === 0 || size === 0)
            return "unsatisfiable";
        return {start: Math.max(0, size - suffix), end: size};
    }
    const start = Number(match[1]);
    const last = match[2] === "" ? Infinity : Number(match[2]);
    if (last < start)
        return undefined;
    if (start >= size)
        return "unsatisfiable";
    return {start, end: Math.min(last + 1, size)};
}

/** Decoded path segments (without the leading empty one), or undefined when one is not valid percent-encoding. */
function decodeSegments(pathname: string): string[] | undefined {
    try {
        return pathname.split("/").slice(1).map((segment) => decodeURIComponent(segment));
    } catch {
        return undefined;
    }
}

function revisionNotFound(revision: string): HubError {
    return {status: 404, code: "RevisionNotFound", message: `Invalid rev id: ${revision}`};
}

function writeHead(exchange: Exchange, status: number, headers: Record<string, string>): void {
    exchange.log.status = status;
    exchange.res.writeHead(status, headers);
}

function sendJson(exchange: Exchange, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = Buffer.from(JSON.stringify(body));
    writeHead(exchange, status, {...headers, "Content-Type": "application/json; charset=utf-8", "Content-Length": String(text.byteLength)});
    exchange.res.end(text);
}

function sendError(exchange: Exchange, error: HubError): void {
    const headers: Record<string, string> = {"X-Error-Message": headerSafe(error.message)};
    if (error.code !== undefined)
        headers["X-Error-Code"] = error.code;
    sendJson(exchange, error.status, {error: error.message}, headers);
}

/** `text` with what a header value cannot hold (control and non-ASCII characters) replaced by "_". */
function headerSafe(text: string): string {
    return text.replace(/[^\x20-\x7e]/g, "_");
}

/** A Content-Disposition header naming the file's base name as a quoted string. */
function disposition(kind: "inline" | "attachment", fileName: string): string {
    return `${kind}; filename="${headerSafe(path.posix.basename(fileName)).replace(/["\\]/g, "\\$&")}"`;
}

/** Wait `ms` milliseconds, or less when the socket closes first. */
function delay(socket: Socket, ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    return untilDone(socket, new Promise<void>((resolve) => timer = setTimeout(resolve, ms)))
        .finally(() => clearTimeout(timer));
}

/** Wait for `promise`, or until the socket closes. */
async function untilDone(socket: Socket, promise: Promise<void>): Promise<void> {
    if (socket.destroyed)
        return;
    let onClose = () => {};
    const closed = new Promise<void>((resolve) => onClose = resolve);
    socket.once("close", onClose);
    try {
        await Promise.race([promise, closed]);
    } finally {
        socket.off("close", onClose);
    }
}
