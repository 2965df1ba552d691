// A real redis-server (Debian's package) for the queue tests: its own free loopback port and temporary directory,
// append-only file on (so a restart keeps the queue), stopped when the test ends.

import {spawn} from "node:child_process";
import type {ChildProcess} from "node:child_process";
import {mkdtemp, rm} from "node:fs/promises";
import {createServer} from "node:net";
import os from "node:os";
import path from "node:path";
import type {Test} from "tap";

export interface RedisServer {
    url: string,
    port: number,
    /** Stops it (SIGTERM: it writes its append-only file) and starts it again on the same port and directory. */
    restart(): Promise<void>,
    stop(): Promise<void>
}

/** A free loopback port (bound then released). */
export function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const server = createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const {port} = server.address() as {port: number};
            server.close(() => resolve(port));
        });
    });
}

/** Starts redis-server, stopped at `t`'s teardown (a test, or a bench's); a clear error when it is not installed (.ci/run installs it). */
export async function startRedis(t: Pick<Test, "teardown">): Promise<RedisServer> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "qwenguard-redis-"));
    const port = await freePort();
    let child: ChildProcess | null = null;
    const start = async () => {
        child = spawn(process.env.QWENGUARD_REDIS_SERVER ?? "redis-server",
            ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--save", ""], {stdio: ["ignore", "pipe", "pipe"]});
        let log = "";
        child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (log += chunk));
        await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`redis-server did not start in 10 s:\n${log}`)), 10_000);
            child!.once("error", (error) => {
                clearTimeout(timer);
                reject(new Error(`Cannot start redis-server (Debian's redis-server package; .ci/run installs it): ${error.message}`));
            });
            child!.stdout!.on("data", () => {
                if (log.includes("Ready to accept connections")) {
                    clearTimeout(timer);
                    resolve();
                }
            });
        });
    };
    const stop = async () => {
        const running = child;
        child = null;
        if (running == null || running.exitCode != null)
            return;
        await new Promise<void>((resolve) => {
            running.once("close", () => resolve());
            running.kill("SIGTERM");
        });
    };
    // before the start: a server that fails to become ready is stopped too
    t.teardown(async () => {
        await stop();
        await rm(dir, {recursive: true, force: true});
    });
    await start();
    return {url: `redis://127.0.0.1:${port}`, port, restart: async () => {
        await stop();
        await start();
    }, stop};
}
