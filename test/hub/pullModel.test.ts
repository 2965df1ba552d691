// pullModel against a local server that speaks the Hugging Face hub's protocol (test/helpers/hubServer.ts), serving
// generated tiny Qwen3Guard checkpoints: the refusals first (each a clear error, nothing left in the cache), then
// pulls by name, revision, token, shards, dropped connections, ready GGUFs, and two pulls at once.

import {existsSync} from "node:fs";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import t from "tap";
import type {Test} from "tap";
import {
    ChecksumMismatchError, HubAccessError, HubNotFoundError, HubUnreachableError, InsufficientSpaceError, ModelNotCachedError, NotAGuardModelError,
    listCachedModels, packageVersion, pullModel, readGguf, removeCachedModel, resolveModel
} from "../../src/index.js";
import type {PullEvent} from "../../src/index.js";
import {cachedFixture} from "../helpers/fixtures.js";
import {startHubServer} from "../helpers/hubServer.js";
import {cachedConvertedFixture} from "../helpers/plantedGen.js";
import {expectError, tempDir} from "../gguf/ggufTestKit.js";

const TOKEN = "hf_test_token";
const genDir = await cachedFixture("tiny-gen");
const streamDir = await cachedFixture("tiny-stream");
const shardedDir = await cachedFixture("tiny-gen", {maxShardBytes: 4 << 20});
const genGguf = await cachedConvertedFixture("tiny-gen", "q8_0");
const streamGguf = await cachedConvertedFixture("tiny-stream", "q8_0");
const llamaConfig = JSON.stringify({architectures: ["LlamaForCausalLM"], model_type: "llama"});
const PR_COMMIT = "1".repeat(40);
/** A loopback port nothing listens on. */
const closedPort = await new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
        const {port} = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
    });
});

const hub = await startHubServer({
    token: TOKEN,
    repos: [
        {id: "Qwen/Qwen3Guard-Gen-0.6B", dir: genDir, revisions: {"refs/pr/1": PR_COMMIT}},
        {id: "Qwen/Qwen3Guard-Stream-0.6B", dir: streamDir},
        // a Stream checkpoint where the Gen name points: the variant must match the name
        {id: "Qwen/Qwen3Guard-Gen-4B", dir: streamDir},
        {id: "me/sharded-guard", dir: shardedDir},
        {id: "me/gated-guard", dir: genDir, gated: true},
        // an empty file in the repository (tokenizer_config.json's template wins over it)
        {id: "me/empty-file", dir: genDir, files: {"chat_template.jinja": ""}},
        {id: "me/llama", files: {"config.json": llamaConfig, "model.safetensors": new Uint8Array(16)}},
        {id: "me/no-config", files: {"README.md": "hello"}},
        {id: "me/ggufs", files: {"guard-q8_0.gguf": await fs.readFile(genGguf), "stream.gguf": await fs.readFile(streamGguf), "sub/guard.gguf": await fs.readFile(genGguf)}}
    ]
});
t.teardown(() => hub.close());

/** A fresh cache folder, and the pull options that point at the local hub. */
async function setup(t: Test, env: NodeJS.ProcessEnv = {}) {
    const cacheDir = await tempDir(t);
    const events: PullEvent[] = [];
    hub.faults = {};
    return {
        cacheDir, events,
        options: {cacheDir, env: {HF_ENDPOINT: hub.url, HF_HOME: "/nonexistent", ...env}, onProgress: (event: PullEvent) => void events.push(event)}
    };
}

/** Nothing under the model's name, and no partial folder, after a failed pull. */
async function expectEmptyCache(t: Test, cacheDir: string): Promise<void> {
    t.same(await listCachedModels(cacheDir), [], "no model in the cache");
    t.same((await fs.readdir(cacheDir)).filter((entry) => entry.startsWith(".partial") || !entry.startsWith(".")), [], "no partial folder");
}

t.test("what cannot be pulled is refused with an error that says what to do, and leaves nothing in the cache", async (t) => {
    const table: Array<[string, NodeJS.ProcessEnv, new (...args: never[]) => Error, string | RegExp]> = [
        ["hf:me/gated-guard", {}, HubAccessError, /\/me\/gated-guard\/resolve\/[0-9a-f]{40}\/config\.json refused access \(401\): set HF_TOKEN to a token with access to it$/],
        ["hf:me/gated-guard", {HF_TOKEN: "hf_wrong"}, HubAccessError,
            /refused access \(403\): the token has no access to it \(accept the model's terms on the hub, or use another token\)$/],
        ["hf:me/missing", {}, HubAccessError, "me/missing does not exist or is private (401): set HF_TOKEN to a token of an account with access (or log in with `huggingface-cli login`)"],
        ["hf:me/missing", {HF_TOKEN: TOKEN}, HubNotFoundError, /^me\/missing does not exist on http:\/\/127\.0\.0\.1:\d+ \(404: Repository Not Found for url: .+\)$/],
        ["hf:Qwen/Qwen3Guard-Gen-0.6B@v9", {}, HubNotFoundError, 'Qwen/Qwen3Guard-Gen-0.6B has no revision "v9" (the hub says: Invalid rev id: v9)'],
        ["hf:me/llama", {}, NotAGuardModelError, /^me\/llama@[0-9a-f]{10} is not a Qwen3Guard checkpoint: its config\.json names the architectures \["LlamaForCausalLM"\] \(expected Qwen3ForCausalLM for Gen or Qwen3ForGuardModel for Stream\)$/],
        ["hf:me/no-config", {}, NotAGuardModelError, /^me\/no-config@[0-9a-f]{10} has no config\.json: it is not a Hugging Face checkpoint \(a GGUF in it is pulled as hf:OWNER\/REPO\/FILE\.gguf\)$/],
        ["gen-4b", {}, NotAGuardModelError, /^Qwen\/Qwen3Guard-Gen-4B@[0-9a-f]{10} holds a Qwen3Guard-Stream checkpoint \(Qwen3ForGuardModel\), but gen-4b:q8_0 names a Gen model$/],
        ["hf:me/ggufs/nothing.gguf", {}, HubNotFoundError, /^me\/ggufs@[0-9a-f]{10} has no file nothing\.gguf; its GGUF files: guard-q8_0\.gguf, stream\.gguf, sub\/guard\.gguf$/],
        ["hf:me/ggufs/stream.gguf", {}, NotAGuardModelError, "hf:me/ggufs/stream.gguf is a Qwen3Guard-Stream backbone GGUF: pull the Stream checkpoint repository instead (hf:OWNER/REPO), which gives the backbone and its head together"],
        ["gen-0.6b", {HF_HUB_OFFLINE: "1"}, ModelNotCachedError, /^gen-0\.6b:q8_0 is not in the model cache \(.+\) and HF_HUB_OFFLINE is set: run `qwenguard pull gen-0\.6b` while online$/],
        ["gen-0.6b", {HF_ENDPOINT: `http://127.0.0.1:${closedPort}`}, HubUnreachableError,
            `Cannot reach the Hugging Face hub at http://127.0.0.1:${closedPort} (ECONNREFUSED): check the network, or HF_ENDPOINT; models already pulled work offline`]
    ];
    for (const [name, env, type, message] of table) {
        const {cacheDir, options} = await setup(t, env);
        await expectError(t, pullModel(name, options), type, message);
        await expectEmptyCache(t, cacheDir);
    }
});

t.test("a corrupt download is deleted and named; a pull the disk cannot hold is refused before any download", async (t) => {
    const {cacheDir, options} = await setup(t);
    hub.faults = {corrupt: {file: "model.safetensors"}};
    const sha256 = hub.digest("Qwen/Qwen3Guard-Gen-0.6B", "model.safetensors").sha256;
    await expectError(t, pullModel("gen-0.6b", options), ChecksumMismatchError,
        new RegExp(`^model\\.safetensors from .+ is corrupt: expected sha256 ${sha256} \\(as the hub reports\\) but got [0-9a-f]{64}; it has been deleted, pull again$`));
    await expectEmptyCache(t, cacheDir);
    const downloads = path.join(cacheDir, ".downloads", (await fs.readdir(path.join(cacheDir, ".downloads")))[0]);
    t.notOk(existsSync(path.join(downloads, "model.safetensors")), "the corrupt file is gone");
    t.ok(existsSync(path.join(downloads, "tokenizer.json")), "the good ones stay for the next pull");

    // a server whose responses end early, cleanly, every time: a bounded number of attempts, then an error
    hub.faults = {reportSize: {file: "tokenizer_config.json", size: hub.digest("Qwen/Qwen3Guard-Gen-0.6B", "tokenizer_config.json").size + 100}};
    await expectError(t, pullModel("gen-0.6b", options), HubUnreachableError,
        /^http:.+\/tokenizer_config\.json holds fewer bytes than the \d+ the hub reports \(a range from byte \d+ was refused with 416\)$/);
    await expectEmptyCache(t, cacheDir);

    hub.faults = {reportSize: {file: "model.safetensors", size: 2 ** 52}};
    const before = hub.bytesSent("model.safetensors");
    await expectError(t, pullModel("gen-0.6b", options), InsufficientSpaceError,
        new RegExp(`^Pulling gen-0\\.6b:q8_0 needs about [\\d.]+ GB in ${cacheDir.replace(/[/.]/g, "\\$&")} \\([\\d.]+ GB to download, [\\d.]+ GB for the conversion\\) but [\\d.]+ GB is free$`));
    t.equal(hub.bytesSent("model.safetensors"), before, "not a byte of the weights fetched");
    await expectEmptyCache(t, cacheDir);
});

t.test("a name is pulled, converted, recorded and then found offline without a request", async (t) => {
    const {cacheDir, events, options} = await setup(t);
    // what a conversion killed part way leaves behind
    await fs.mkdir(path.join(cacheDir, ".partial-gen-0.6b-q8_0"), {recursive: true});
    await fs.writeFile(path.join(cacheDir, ".partial-gen-0.6b-q8_0", "model.gguf"), "half a file");
    const model = await pullModel("gen-0.6b", options);
    t.equal(model.name, "gen-0.6b:q8_0");
    t.equal(model.path, path.join(cacheDir, "gen-0.6b-q8_0", "model.gguf"));
    t.equal(model.headPath, undefined);
    const files = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"];
    t.match(model.manifest, {
        manifestVersion: 1, name: "gen-0.6b:q8_0", variant: "gen", type: "q8_0", converterVersion: packageVersion(),
        source: {kind: "checkpoint", repo: "Qwen/Qwen3Guard-Gen-0.6B", revision: "main", commit: /^[0-9a-f]{40}$/},
        downloaded: files.map((file) => ({file, size: hub.digest("Qwen/Qwen3Guard-Gen-0.6B", file).size, sha256: hub.digest("Qwen/Qwen3Guard-Gen-0.6B", file).sha256})),
        files: [{file: "model.gguf", size: (await fs.stat(model.path)).size}]
    });
    const {metadata} = await readGguf(model.path);
    t.equal(metadata.getString("qwen3guard.variant"), "gen");
    t.same(events.map(({event}) => event).filter((event) => event !== "progress"), ["file", "resolved", "file", "file", "file", "convert", "done"]);
    t.match(events.find(({event}) => event === "resolved"), {source: "Qwen/Qwen3Guard-Gen-0.6B", files: 4, totalBytes: files.reduce((sum, file) => sum + hub.digest("Qwen/Qwen3Guard-Gen-0.6B", file).size, 0)});
    t.same(await fs.readdir(cacheDir).then((entries) => entries.filter((entry) => !entry.startsWith("."))), ["gen-0.6b-q8_0"], "the partial folder is gone");
    t.same(await fs.readdir(path.join(cacheDir, ".downloads")), [], "the checkpoint is deleted");

    const requests = hub.requests.length;
    const offline = {...options, env: {...options.env, HF_HUB_OFFLINE: "1"}};
    t.equal((await pullModel("gen-0.6b:Q8_0", offline)).path, model.path, "the second use is offline");
    t.equal((await resolveModel("gen-0.6b", offline)).path, model.path);
    t.equal(hub.requests.length, requests, "no request");
    await expectError(t, resolveModel("stream-0.6b", {...options, pull: false}), ModelNotCachedError,
        `stream-0.6b:q8_0 is not in the model cache (${cacheDir}): run \`qwenguard pull stream-0.6b\``);

    t.equal((await removeCachedModel("gen-0.6b", cacheDir))?.name, "gen-0.6b:q8_0");
    t.equal(await removeCachedModel("gen-0.6b", cacheDir), undefined, "already gone");
    t.same(await listCachedModels(cacheDir), []);
});

t.test("a Stream name gives the backbone and its head; another type is quantized; a revision is pinned to its commit", async (t) => {
    const {cacheDir, events, options} = await setup(t);
    const stream = await pullModel("stream-0.6b:q4_k_m", {...options, keepSource: true});
    t.equal(stream.headPath, path.join(cacheDir, "stream-0.6b-q4_k_m", "model.head.gguf"));
    t.equal((await readGguf(stream.path)).metadata.getString("qwen3guard.stream.head_file"), "model.head.gguf");
    t.match(stream.manifest, {variant: "stream", type: "q4_k_m", files: [{file: "model.gguf"}, {file: "model.head.gguf"}]});
    t.ok(events.some(({event}) => event === "quantize"), "quantized from F16");
    t.ok(existsSync(path.join(cacheDir, "stream-0.6b-q4_k_m", "source", "model.safetensors")), "--keep-source keeps the checkpoint in the model's folder");

    const pinned = await pullModel("hf:Qwen/Qwen3Guard-Gen-0.6B@refs/pr/1", options);
    t.match(pinned.manifest.source, {revision: "refs/pr/1", commit: PR_COMMIT});
    t.ok(hub.requests.some(({path}) => path.includes(`/resolve/${PR_COMMIT}/model.safetensors`)), "files are fetched at the resolved commit");
    t.same((await listCachedModels(cacheDir)).map(({name}) => name), ["hf:Qwen/Qwen3Guard-Gen-0.6B@refs%2Fpr%2F1:q8_0", "stream-0.6b:q4_k_m"]);
});

t.test("a gated repository with a token, a sharded checkpoint, and a connection dropped mid-file", async (t) => {
    const home = await tempDir(t);
    await fs.writeFile(path.join(home, "token"), `${TOKEN}\n`);
    const {options} = await setup(t, {HF_HOME: home});
    const mark = hub.requests.length;
    t.match((await pullModel("hf:me/gated-guard", options)).manifest.source, {repo: "me/gated-guard"}, "the token file under HF_HOME is used");
    t.ok(hub.requests.slice(mark).filter(({path}) => path.includes("/me/gated-guard/resolve/")).every(({authorization}) => authorization === `Bearer ${TOKEN}`));

    const events: string[] = [];
    t.match((await pullModel("hf:me/empty-file", options)).manifest.downloaded.find(({file}) => file === "chat_template.jinja"), {size: 0},
        "an empty file downloads as an empty file");
    const sharded = await pullModel("hf:me/sharded-guard", {...options, onProgress: ({event}) => void events.push(event)});
    t.ok(events.includes("probe"), "a checkpoint from outside Qwen/ is converted, then loaded once in a child");
    const shards = sharded.manifest.downloaded.map(({file}) => file).filter((file) => file.endsWith(".safetensors"));
    t.ok(shards.length > 1, `${shards.length} shards`);
    t.ok(sharded.manifest.downloaded.some(({file}) => file === "model.safetensors.index.json"));

    const {options: fresh} = await setup(t);
    const sent = hub.bytesSent("model.safetensors");
    hub.faults = {dropAfter: {file: "model.safetensors", bytes: 3 << 20, times: 2}};
    const model = await pullModel("gen-0.6b", fresh);
    const size = hub.digest("Qwen/Qwen3Guard-Gen-0.6B", "model.safetensors").size;
    t.match(model.manifest.downloaded.find(({file}) => file === "model.safetensors"), {sha256: hub.digest("Qwen/Qwen3Guard-Gen-0.6B", "model.safetensors").sha256});
    t.equal(hub.faults.dropAfter?.times, 0, "both drops happened");
    t.ok(hub.bytesSent("model.safetensors") - sent < 2 * size, "the retries resumed rather than starting over");
});

t.test("a ready GGUF from the hub or a URL is checked and probed in a child process", async (t) => {
    const {events, options} = await setup(t);
    const fromHub = await pullModel("hf:me/ggufs/guard-q8_0.gguf", options);
    t.match(fromHub.manifest, {variant: "gen", type: "q8_0", source: {kind: "hub-gguf", repo: "me/ggufs", file: "guard-q8_0.gguf", commit: /^[0-9a-f]{40}$/},
        downloaded: [{file: "guard-q8_0.gguf", sha256: hub.digest("me/ggufs", "guard-q8_0.gguf").sha256}]});
    t.ok(events.some(({event}) => event === "probe"), "a file from outside Qwen/ is loaded once in a child first");
    t.same(await fs.readFile(fromHub.path), await fs.readFile(genGguf));
    t.match((await pullModel("hf:me/ggufs/sub/guard.gguf", {...options, isolate: false})).manifest, {source: {file: "sub/guard.gguf"}}, "a GGUF in a folder of the repository");

    const url = `${hub.url}/me/ggufs/resolve/main/guard-q8_0.gguf`;
    const fromUrl = await pullModel(url, options);
    t.match(fromUrl.manifest, {name: url, source: {kind: "url", url}, downloaded: [{sha256: hub.digest("me/ggufs", "guard-q8_0.gguf").sha256}]});
    await expectError(t, pullModel(`${hub.url}/me/ggufs/resolve/main/gone.gguf`, options), HubNotFoundError,
        `${hub.url}/me/ggufs/resolve/main/gone.gguf does not exist (404)`);
});

t.test("two pulls of one model at once: one downloads, the other waits and reuses it; a dead process's lock does not block", async (t) => {
    const {cacheDir, options} = await setup(t);
    const sent = hub.bytesSent("model.safetensors");
    const waiting: string[] = [];
    const onProgress = (event: PullEvent) => void (event.event === "waiting" && waiting.push(event.name));
    const [first, second] = await Promise.all([pullModel("gen-0.6b", {...options, onProgress}), pullModel("gen-0.6b", {...options, onProgress})]);
    t.equal(first.path, second.path);
    t.same(waiting, ["gen-0.6b:q8_0"], "one of the two waited");
    t.equal(hub.bytesSent("model.safetensors") - sent, hub.digest("Qwen/Qwen3Guard-Gen-0.6B", "model.safetensors").size, "downloaded once");

    // the lock a process killed with -9 leaves: not refreshed for a minute
    const lock = path.join(cacheDir, ".locks", "hf-Qwen--Qwen3Guard-Stream-0.6B.lock");
    await fs.mkdir(lock, {recursive: true});
    const old = new Date(Date.now() - 60_000);
    await fs.utimes(lock, old, old);
    t.equal((await pullModel("stream-0.6b", options)).name, "stream-0.6b:q8_0");
    t.notOk(existsSync(lock), "released");
});
