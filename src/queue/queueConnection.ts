import {createHash} from "node:crypto";
import type {Hash} from "node:crypto";
import {closeSync, openSync, readSync, statSync} from "node:fs";
import path from "node:path";
import type {ConnectionOptions} from "bullmq";
import {Redis} from "ioredis";
import {readGguf} from "../../gguf/index.js";
import {readGuardVariant} from "../gen/readGuardVariant.js";
import {packageVersion} from "../native/runtimeInfo.js";
import {defaultHeadPath} from "../stream/StreamGuard.js";

/** Queue names start with this, then the minor version and the model key: workers never mix models or versions. */
export const QUEUE_PREFIX = "qwenguard-batch";

/** A checked `redis://HOST:PORT[/DB]` (or `rediss://` for TLS) and the connection options BullMQ takes. */
export interface QueueTarget {
    url: string,
    /** The URL without a password (for messages). */
    display: string,
    connection: ConnectionOptions
}

/**
 * Checks a queue URL: `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for TLS.
 * @throws TypeError saying what is wrong and what was expected
 */
export function parseQueueUrl(url: string): QueueTarget {
    const expected = "redis://HOST:PORT[/DB] (or rediss:// for TLS)";
    let parsed: URL;
    try {
        parsed = new URL(url);
    } catch {
        throw new TypeError(`Expected ${expected} for the queue but received ${JSON.stringify(url)}`);
    }
    if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:")
        throw new TypeError(`Expected ${expected} for the queue but received the scheme ${JSON.stringify(parsed.protocol.slice(0, -1))}`);
    if (parsed.hostname.length === 0)
        throw new TypeError(`Expected ${expected} for the queue but the URL has no host`);
    const db = parsed.pathname.replace(/^\//, "");
    if (db.length > 0 && !/^\d{1,2}$/.test(db))
        throw new TypeError(`Expected a database number (0–15) after the port but received ${JSON.stringify(db)}`);
    const display = `${parsed.protocol}//${parsed.hostname}${parsed.port.length > 0 ? `:${parsed.port}` : ""}${db.length > 0 ? `/${db}` : ""}`;
    // workers block on Redis: BullMQ needs requests to wait for a reconnect rather than fail after a few retries
    return {url, display, connection: {url, maxRetriesPerRequest: null, retryStrategy: (times: number) => Math.min(200 * times, 5000)}};
}

/**
 * A short key of the files a guard judges with, that the coordinator and the workers compute alike: a Gen GGUF, or a
 * Stream backbone and its head (the one given, or the one the backbone names). Each file counts with its size, its
 * first 16 MiB (the GGUF header, metadata, vocabulary and tensor table) and its last MiB. Models that differ in any
 * of it have different keys, hence different queues.
 * @throws Error when a file cannot be read, or a Stream backbone names no head and none is given
 */
export async function guardKey(model: string, head?: string): Promise<string> {
    const files = [model];
    if (await readGuardVariant(model) === "stream-backbone")
        files.push(head != null ? path.resolve(head) : defaultHeadPath(model, await readGguf(model)));
    const hash = createHash("sha256");
    for (const file of files)
        fingerprintFile(file, hash);
    return hash.digest("hex").slice(0, 16);
}

function fingerprintFile(file: string, hash: Hash): void {
    const size = statSync(file).size;
    hash.update(`${size}:`);
    const fd = openSync(file, "r");
    try {
        const read = (position: number, length: number) => {
            const buffer = Buffer.alloc(length);
            const got = readSync(fd, buffer, 0, length, position);
            hash.update(buffer.subarray(0, got));
        };
        read(0, Math.min(size, 16 << 20));
        if (size > 17 << 20)
            read(size - (1 << 20), 1 << 20);
    } finally {
        closeSync(fd);
    }
}

/**
 * The queue of a model for this qwenguard minor version: workers of another version never take the run's chunks
 * (they would refuse them, and the chunks would fail), and a coordinator whose version no worker runs says so.
 */
export function queueName(key: string): string {
    return `${QUEUE_PREFIX}-${minorVersion(packageVersion())}-${key}`;
}

/** `0.1.3` → `0.1`: versions that write the same output. */
export function minorVersion(version: string): string {
    return version.split(".").slice(0, 2).join(".");
}

/**
 * Checks that Redis answers at the queue's URL, with one connection that never retries (BullMQ's own connections
 * retry for ever, which is what a long run wants once it is going, and could not be closed while never connected).
 * @throws Error naming the URL and the cause when it does not answer in time
 */
export async function assertReachable(target: QueueTarget, timeoutMs = 10_000): Promise<void> {
    const client = new Redis(target.url, {lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: timeoutMs,
        enableOfflineQueue: false});
    client.on("error", () => {}); // the failure is reported by connect() below
    try {
        await client.connect();
        await client.ping();
    } catch (error) {
        throw new Error(`Cannot reach Redis at ${target.display} for the queue: ${(error as Error).message || "no answer"}`);
    } finally {
        client.disconnect();
    }
}
