// `npm run bench:pull [-- --quick] [--rounds 3]`: what `qwenguard pull` costs, against a local server that speaks the
// Hugging Face hub's protocol (test/helpers/hubServer.ts) serving the 0.6B-shape Gen checkpoint (BF16, random weights;
// the tiny one with --quick).
// 1. Download throughput: the checkpoint's files fetched by qwenguard's downloader (four files at once, each checked
//    against the hub's sha256 or git blob id) against curl fetching the same files from the same server in the same
//    run (`curl -Z`, four at once), and curl followed by sha256sum: rounds alternate, medians compared.
// 2. Pull and convert: `qwenguard pull gen-0.6b` in a child process into an empty cache, its wall time split into
//    download and conversion (from its --json events), and its peak RSS (VmHWM, read from /proc while it runs).
// Results: printed, and written to .cache/bench/pull[-quick].json.

import {execFile, spawn} from "node:child_process";
import {readFileSync} from "node:fs";
import {mkdir, mkdtemp, readdir, rm, writeFile} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {promisify} from "node:util";
import {HubClient} from "../src/hub/HubClient.js";
import {downloadFiles} from "../src/hub/downloadFiles.js";
import {hubEnvironment} from "../src/hub/hubEnvironment.js";
import {ensureAddonBuilt} from "../src/native/addonBuild.js";
import {startHubServer} from "../test/helpers/hubServer.js";
import {benchCacheDir, ensureCheckpoint, repoRoot} from "./benchModels.js";

const run = promisify(execFile);
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const rounds = Number(args[args.indexOf("--rounds") + 1] ?? 3) || 3;
const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
const REPO = "Qwen/Qwen3Guard-Gen-0.6B";

await ensureAddonBuilt();
const {hfDir} = await ensureCheckpoint(quick ? "tiny-gen" : "gen-0.6b", benchCacheDir, log);
const hub = await startHubServer({repos: [{id: REPO, dir: hfDir}]});
const work = await mkdtemp(path.join(os.tmpdir(), "qwenguard-pull-bench-"));
try {
    const environment = hubEnvironment({HF_ENDPOINT: hub.url});
    const client = new HubClient(environment);
    const info = await client.repoInfo(REPO);
    const files = [...info.files.values()];
    const bytes = files.reduce((sum, file) => sum + file.size, 0);
    const downloads = files.map((file) => ({url: client.fileUrl(REPO, info.commit, file.name), file: file.name, size: file.size, sha256: file.sha256, blobId: file.blobId}));
    log(`pull bench: ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB from ${hfDir}`);

    const timed = async (action: () => Promise<unknown>) => {
        const dir = path.join(work, "round");
        await rm(dir, {recursive: true, force: true});
        await mkdir(dir);
        const started = performance.now();
        await action();
        const seconds = (performance.now() - started) / 1000;
        await rm(dir, {recursive: true, force: true});
        return seconds;
    };
    const curlArgs = ["-Z", "--parallel-max", "4", "-sS", "-L", "--fail", ...downloads.flatMap(({url, file}) => ["-o", path.join(work, "round", file), url])];
    const times = {qwenguard: [] as number[], curl: [] as number[], curlSha256sum: [] as number[]};
    for (let round = 0; round < rounds; round++) {
        times.qwenguard.push(await timed(() => downloadFiles(downloads, path.join(work, "round"))));
        times.curl.push(await timed(() => run("curl", curlArgs)));
        times.curlSha256sum.push(await timed(async () => {
            await run("curl", curlArgs);
            await run("sha256sum", downloads.map(({file}) => path.join(work, "round", file)));
        }));
        log(`round ${round + 1}: qwenguard ${times.qwenguard[round].toFixed(2)} s, curl ${times.curl[round].toFixed(2)} s, ` +
            `curl + sha256sum ${times.curlSha256sum[round].toFixed(2)} s`);
    }
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const download = {
        bytes, rounds,
        seconds: {qwenguard: median(times.qwenguard), curl: median(times.curl), curlSha256sum: median(times.curlSha256sum)},
        mbPerSecond: {qwenguard: bytes / 1e6 / median(times.qwenguard), curl: bytes / 1e6 / median(times.curl)},
        // above 1: qwenguard is faster
        throughputVsCurl: median(times.curl) / median(times.qwenguard),
        throughputVsCurlSha256sum: median(times.curlSha256sum) / median(times.qwenguard)
    };
    log(`download: qwenguard ${download.mbPerSecond.qwenguard.toFixed(0)} MB/s (hashes checked), curl ${download.mbPerSecond.curl.toFixed(0)} MB/s: ` +
        `${download.throughputVsCurl.toFixed(2)}× curl's throughput, ${download.throughputVsCurlSha256sum.toFixed(2)}× curl + sha256sum's`);

    const pull = await pullAndConvert(hub.url, path.join(work, "cache"));
    log(`pull gen-0.6b: ${pull.seconds.toFixed(1)} s (download ${pull.downloadSeconds.toFixed(1)} s, conversion ${pull.convertSeconds.toFixed(1)} s), ` +
        `peak RSS ${pull.peakRssMiB.toFixed(0)} MiB, GGUF ${(pull.ggufBytes / 1e6).toFixed(1)} MB`);
    const results = {checkpoint: path.relative(repoRoot, hfDir), cpus: os.availableParallelism(), download, pull};
    process.stdout.write(JSON.stringify(results, null, 2) + "\n");
    await writeFile(path.join(benchCacheDir, `pull${quick ? "-quick" : ""}.json`), JSON.stringify(results, null, 2) + "\n");
} finally {
    await hub.close();
    await rm(work, {recursive: true, force: true});
}

/** `qwenguard pull gen-0.6b --json` in a child process: wall time, its phases, and peak RSS from /proc. */
async function pullAndConvert(endpoint: string, cache: string) {
    const started = performance.now();
    const child = spawn(process.execPath, [path.join(repoRoot, "bin", "qwenguard.js"), "pull", "gen-0.6b", "--json"], {
        env: {...process.env, QWENGUARD_MODELS: cache, HF_ENDPOINT: endpoint, HF_HOME: "/nonexistent"}, stdio: ["ignore", "pipe", "inherit"]
    });
    let peakKiB = 0;
    const poll = setInterval(() => {
        try {
            const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
            peakKiB = Math.max(peakKiB, Number(match?.[1] ?? 0));
        } catch {
            // exited
        }
    }, 50);
    let convertAt: number | undefined;
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        output += chunk;
        if (convertAt === undefined && output.includes('"event":"convert"'))
            convertAt = performance.now();
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    clearInterval(poll);
    if (code !== 0)
        throw new Error(`qwenguard pull exited with ${code}`);
    const ended = performance.now();
    const folder = path.join(cache, "gen-0.6b-q8_0");
    const {size} = await import("node:fs/promises").then((fs) => fs.stat(path.join(folder, "model.gguf")));
    return {
        seconds: (ended - started) / 1000, downloadSeconds: ((convertAt ?? ended) - started) / 1000, convertSeconds: (ended - (convertAt ?? ended)) / 1000,
        peakRssMiB: peakKiB / 1024, ggufBytes: size, files: await readdir(folder)
    };
}
