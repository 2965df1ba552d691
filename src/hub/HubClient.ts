// The hub's model-info API: which files a repository holds at a revision, their sizes and hashes, and the commit the
// revision resolves to. (node-llama-cpp's downloader fetches files but does not expose this; see README "Models".)

import {HubAccessError, HubNotFoundError, HubUnreachableError} from "./errors.js";
import type {HubEnvironment} from "./hubEnvironment.js";

/** A file of a repository at a commit. */
export interface HubFile {
    /** Its path in the repository. */
    readonly name: string;
    readonly size: number;
    /** The LFS object's sha256 (hex), for files stored in LFS. */
    readonly sha256: string | undefined;
    /** The git blob id (sha1 of "blob SIZE\0" + bytes, hex), for every file. */
    readonly blobId: string | undefined;
}

/** A repository at a commit. */
export interface HubRepoInfo {
    readonly repo: string;
    /** The revision asked for (default "main"). */
    readonly revision: string;
    /** The commit it resolved to (40 hex digits). */
    readonly commit: string;
    readonly files: ReadonlyMap<string, HubFile>;
    /** The repository is gated (a token with access is needed). */
    readonly gated: boolean;
}

/** How long one API request may take. */
const API_TIMEOUT_MS = 30_000;

/** Talks to the hub's API. */
export class HubClient {
    public constructor(public readonly environment: HubEnvironment) {}

    /** Request headers: the token, when there is one. */
    public get headers(): Record<string, string> {
        return this.environment.token !== undefined ? {authorization: `Bearer ${this.environment.token}`} : {};
    }

    /** The download URL of a file at a commit (the hub redirects it to its file store). */
    public fileUrl(repo: string, commit: string, file: string): string {
        return `${this.environment.endpoint}/${repo}/resolve/${encodeURIComponent(commit)}/${file.split("/").map(encodeURIComponent).join("/")}`;
    }

    /**
     * The files of a repository at a revision, with sizes and hashes, and the commit the revision names.
     * @param repo - OWNER/NAME
     * @param revision - a branch, tag or commit (default "main")
     * @param signal - aborts the request
     * @throws {HubAccessError} for 401 / 403 (a gated or private repository: set HF_TOKEN)
     * @throws {HubNotFoundError} for a repository or revision the hub does not have
     * @throws {HubUnreachableError} when the hub cannot be reached or fails
     */
    public async repoInfo(repo: string, revision = "main", signal?: AbortSignal): Promise<HubRepoInfo> {
        const url = `${this.environment.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
        const response = await this.fetchApi(url, repo, revision, signal);
        const body = await response.json().catch(() => undefined) as Record<string, unknown> | undefined;
        const commit = body?.sha;
        const siblings = body?.siblings;
        if (typeof commit !== "string" || !/^[0-9a-f]{40}$/.test(commit) || !Array.isArray(siblings))
            throw new HubUnreachableError(`The hub at ${this.environment.endpoint} answered ${url} without a commit and a file list: is HF_ENDPOINT a Hugging Face hub?`);
        const files = new Map<string, HubFile>();
        for (const sibling of siblings as Array<Record<string, unknown>>) {
            if (typeof sibling?.rfilename !== "string")
                continue;
            const lfs = sibling.lfs as Record<string, unknown> | undefined;
            const size = typeof lfs?.size === "number" ? lfs.size : sibling.size;
            files.set(sibling.rfilename, {
                name: sibling.rfilename,
                size: typeof size === "number" && Number.isSafeInteger(size) && size >= 0 ? size : -1,
                sha256: typeof lfs?.sha256 === "string" && /^[0-9a-f]{64}$/.test(lfs.sha256) ? lfs.sha256 : undefined,
                blobId: typeof sibling.blobId === "string" && /^[0-9a-f]{40}$/.test(sibling.blobId) ? sibling.blobId : undefined
            });
        }
        return {repo, revision, commit, files, gated: body?.gated !== false && body?.gated !== undefined};
    }

    private async fetchApi(url: string, repo: string, revision: string, signal: AbortSignal | undefined): Promise<Response> {
        let response: Response;
        try {
            const timeout = AbortSignal.timeout(API_TIMEOUT_MS);
            response = await fetch(url, {headers: {accept: "application/json", ...this.headers},
                signal: signal !== undefined ? AbortSignal.any([signal, timeout]) : timeout});
        } catch (error) {
            if (signal?.aborted)
                throw signal.reason;
            const cause = (error as {cause?: {code?: string, message?: string}}).cause;
            throw new HubUnreachableError(`Cannot reach the Hugging Face hub at ${this.environment.endpoint} ` +
                `(${cause?.code ?? cause?.message ?? (error as Error).message}): check the network, or HF_ENDPOINT; ` +
                "models already pulled work offline");
        }
        if (response.ok)
            return response;

        const code = response.headers.get("x-error-code");
        const message = response.headers.get("x-error-message") ?? await response.text().then((text) => text.slice(0, 300)).catch(() => "");
        await response.body?.cancel().catch(() => undefined);
        if (code === "RevisionNotFound")
            throw new HubNotFoundError(`${repo} has no revision ${JSON.stringify(revision)} (the hub says: ${message})`);
        if (response.status === 401 || response.status === 403) {
            const how = this.environment.token === undefined
                ? "set HF_TOKEN to a token of an account with access (or log in with `huggingface-cli login`)"
                : `the token from ${this.environment.tokenSource} has no access to it: accept the model's terms on the hub, or use another token`;
            const what = code === "GatedRepo" ? "is gated" : code === "RepoNotFound" ? "does not exist or is private" : "refused access";
            throw new HubAccessError(`${repo} ${what} (${response.status}): ${how}`);
        }
        if (response.status === 404)
            throw new HubNotFoundError(`${repo} does not exist on ${this.environment.endpoint} (404${message ? `: ${message}` : ""})`);
        throw new HubUnreachableError(`The hub at ${this.environment.endpoint} answered ${response.status} ${response.statusText} for ${repo}${message ? `: ${message}` : ""}`);
    }
}
