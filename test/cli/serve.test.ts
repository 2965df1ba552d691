// `qwenguard serve` as a user runs it: usage errors, a server judged with curl, the API key from the environment, and a
// SIGTERM that lets the request in flight finish, ends the live session with a last event and exits 0.

import {spawn, spawnSync} from "node:child_process";
import type {ChildProcess} from "node:child_process";
import path from "node:path";
import t from "tap";
import type {Test} from "tap";
import {packageRoot} from "../../src/native/addonBuild.js";
import {plantedModels, StreamClient} from "../server/serverTestKit.js";

const cli = path.join(packageRoot, "bin", "qwenguard.js");
const {gen, stream} = await plantedModels();

/** A `qwenguard serve` process and what it has written to stderr. */
interface ServeProcess {
    child: ChildProcess,
    stderr: () => string,
    exited: Promise<number | null>,
    /** Resolves with the first stderr line matching, or rejects when the process exits first. */
    waitFor: (pattern: RegExp) => Promise<RegExpMatchArray>
}

function serve(t: Test, args: readonly string[], env: Record<string, string> = {}): ServeProcess {
    const child = spawn(process.execPath, [cli, "serve", ...args], {env: {...process.env, NO_COLOR: "1", ...env}});
    let stderr = "";
    const listeners: Array<() => void> = [];
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
        listeners.forEach((listener) => listener());
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => {
        resolve(code);
        listeners.forEach((listener) => listener());
    }));
    t.teardown(() => {
        if (child.exitCode == null && child.signalCode == null)
            child.kill("SIGKILL");
    });
    const waitFor = (pattern: RegExp) => new Promise<RegExpMatchArray>((resolve, reject) => {
        const check = () => {
            const match = pattern.exec(stderr);
            if (match != null)
                resolve(match);
            else if (child.exitCode != null)
                reject(new Error(`qwenguard serve exited with ${child.exitCode} before ${pattern}; stderr:\n${stderr}`));
        };
        listeners.push(check);
        check();
    });
    return {child, stderr: () => stderr, exited, waitFor};
}

/** Starts a server on a free port and waits until it is ready; returns its URL. */
async function ready(process_: ServeProcess): Promise<string> {
    const [, url] = await process_.waitFor(/listening on (http:\/\/\S+);/);
    await process_.waitFor(/qwenguard: ready: /);
    return url;
}

function curl(args: readonly string[]): {status: number | null, stdout: string} {
    const result = spawnSync("curl", ["-sS", ...args], {encoding: "utf8"});
    return {status: result.status, stdout: result.stdout};
}

t.test("usage errors exit with 2 and say what was wrong", async (t) => {
    const table: Array<[string[], RegExp]> = [
        [[], /^qwenguard: Expected a model to serve: -m, --model <model> \(a Gen and\/or a Stream model: a name such as gen-0\.6b, or a file\)\n$/],
        [["-m", gen, "--port", "http"], /^qwenguard: Expected a port number between 0 and 65535 for --port but received "http"\n$/],
        [["-m", gen, "--port", "70000"], /^qwenguard: Expected a port number between 0 and 65535 for --port but received "70000"\n$/],
        [["-m", gen, "--max-body", "lots"], /^qwenguard: Expected a size in bytes \(e\.g\. 1048576, 512k or 1m\) for --max-body but received "lots"\n$/],
        [["-m", gen, "--max-body", "100"], /^qwenguard: Expected an integer between 1024 and 1073741824 for --max-body but received 100\n$/],
        [["-m", gen, "--log-level", "loud"], /^qwenguard: Expected silent, error, warn, info or debug for --log-level but received "loud"\n$/],
        [["-m", gen, "--policy", "medium"], /^qwenguard: Expected strict, loose or a number in \(0, 1\] for --policy but received "medium"\n$/],
        [["-m", gen, "--upstream", "ftp://host/v1"], /^qwenguard: Expected an http:\/\/ or https:\/\/ URL for --upstream but received "ftp:\/\/host\/v1"\n$/],
        [["-m", gen, "--max-queue", "-1"], /^qwenguard: Expected a non-negative integer for --max-queue but received "-1"\n$/],
        [["-m", gen, "--idle-timeout", "0"], /^qwenguard: Expected a positive integer for --idle-timeout but received "0"\n$/],
        [["-m", gen, "--cache-type-k", "q4_0"], /^qwenguard: Expected one of "f16", "q8_0" for --cache-type-k but received "q4_0"\n$/]
    ];
    for (const [args, message] of table) {
        const run = serve(t, args);
        t.equal(await run.exited, 2, args.join(" "));
        t.match(run.stderr(), message, args.join(" "));
    }
    const missing = serve(t, ["-m", "/no/such/model.gguf", "--port", "0"]);
    t.equal(await missing.exited, 2);
    t.match(missing.stderr(), /listening on http:\/\/127\.0\.0\.1:\d+; loading \/no\/such\/model\.gguf\nqwenguard: the models could not be loaded: Model file \/no\/such\/model\.gguf does not exist\n$/);
    // a q8_0 KV cache on a model whose heads are narrower than its blocks: the load fails, saying so
    const narrow = serve(t, ["-m", stream, "--port", "0", "-t", "1", "--context-size", "256", "--cache-type-k", "q8_0"]);
    t.equal(await narrow.exited, 2);
    t.match(narrow.stderr(), /the models could not be loaded: Expected attention heads a multiple of 32 values wide for a q8_0 KV cache of keys .* 16 wide: use f16\n$/);
});

t.test("a server judged with curl, its key from QWENGUARD_API_KEY", async (t) => {
    const run = serve(t, ["-m", gen, "-m", stream, "--port", "0", "-t", "1", "--context-size", "1024"], {QWENGUARD_API_KEY: "k3y"});
    const url = await ready(run);
    t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/, "loopback by default");
    t.match(run.stderr(), /ready: model-gen \(gen\), model-stream \(stream\)/);
    const health = curl(["-w", " %{http_code}", `${url}/health`]);
    t.match(health.stdout, /^\{"status":"ok",.*\} 200$/);
    const refused = curl(["-w", " %{http_code}", `${url}/v1/moderations`, "-H", "content-type: application/json", "-d", '{"input":"hi"}']);
    t.match(refused.stdout, /"code":"invalid_api_key".* 401$/);
    const judged = curl([`${url}/v1/moderations`, "-H", "authorization: Bearer k3y", "-H", "content-type: application/json",
        "-d", '{"input": "How do I make a bomb?"}']);
    t.equal(judged.status, 0);
    t.match(JSON.parse(judged.stdout), {model: "model-gen", results: [{flagged: true, categories: {violence: true}, qwen3guard: {level: "Unsafe"}}]});
    run.child.kill("SIGINT");
    t.equal(await run.exited, 0);
    t.match(run.stderr(), /SIGINT: finishing the work in flight \(at most 10 s\), then stopping\nqwenguard: stopped\n$/);
});

t.test("SIGTERM: the request in flight finishes, the live session hears why, the process exits 0", async (t) => {
    const run = serve(t, ["-m", gen, "-m", stream, "--port", "0", "-t", "1", "--context-size", "2048"]);
    const url = await ready(run);
    const session = await StreamClient.connect(t, url);
    session.send({type: "start", messages: [{role: "user", content: "hi"}]});
    await session.next("prompt");
    session.send({type: "text", text: "Mix flour and water, then "});
    await session.next("judged");

    const slow = fetch(`${url}/v1/moderations`, {method: "POST", headers: {"content-type": "application/json"},
        body: JSON.stringify({input: "Please tell me a long story about bread. ".repeat(40), mode: "generate"})});
    await new Promise((resolve) => setTimeout(resolve, 100));
    run.child.kill("SIGTERM");
    const reply = await slow;
    t.equal(reply.status, 200, "the request in flight was answered");
    t.match(await reply.json(), {results: [{flagged: false}]});
    t.match(await session.next("summary"), {reason: "shutdown"});
    t.equal((await session.closed).code, 1001);
    t.equal(await run.exited, 0);
    t.match(run.stderr(), /SIGTERM: finishing the work in flight/);
    await t.rejects(fetch(`${url}/health`), "no longer listening");
});

t.test("a host other than loopback is said to be reachable from the network", async (t) => {
    const run = serve(t, ["-m", gen, "--host", "0.0.0.0", "--port", "0", "-t", "1", "--context-size", "1024"]);
    await run.waitFor(/warning: listening on 0\.0\.0\.0, reachable from the network, with no --api-key\n/);
    await run.waitFor(/qwenguard: ready: /);
    run.child.kill("SIGTERM");
    t.equal(await run.exited, 0);
});
