import {spawn, spawnSync} from "node:child_process";
import {appendFileSync, cpSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync} from "node:fs";
import os from "node:os";
import path from "node:path";
import t from "tap";
import {loadLlamaRuntime} from "../../src/index.js";
import {packageRoot} from "../../src/native/addonBuild.js";

t.test("a different gpu option than the loaded runtime's is refused", async (t) => {
    await loadLlamaRuntime({gpu: false});
    await t.rejects(loadLlamaRuntime({gpu: "cuda"}), {
        message: 'Expected the same "gpu" option as the runtime already loaded in this process (false) but received cuda'
    });
});

t.test("the addon and node-llama-cpp share one llama.cpp", async (t) => {
    const {llama, addon} = await loadLlamaRuntime({gpu: false});
    const build = addon.getBuildInfo();

    t.equal(build.release, llama.llamaCppRelease.release, "compiled against the release node-llama-cpp ships");
    t.equal(build.systemInfo, llama.systemInfo, "same system info from both sides");
    t.match(build.commit, /^[0-9a-f]{40}$/);

    const mapped = new Set(readFileSync("/proc/self/maps", "utf8").split("\n")
        .map((line) => line.split(/\s+/).slice(5).join(" "))
        .filter((file) => /\/libllama(\.[a-z]+)?\.v[\d.]+\.so$/.test(file)));
    t.same([...mapped], [realpathSync(build.libraryPath)], "exactly one libllama is mapped, and the addon is bound to it");
});

t.test("the addon reports the compute devices of the loaded flavour", async (t) => {
    const {addon} = await loadLlamaRuntime({gpu: false});
    const cpu = addon.getDevices().find((device) => device.type === "cpu");
    t.ok(cpu, "a CPU device is registered");
    t.equal(cpu?.backend, "CPU");
    t.ok((cpu?.features.length ?? 0) > 0, "the CPU backend lists its features");
});

t.test("a missing or stale addon is rebuilt at first use, saying so on stderr", async (t) => {
    // A private copy of the package, so the rebuild does not disturb the addon other tests use.
    const root = mkdtempSync(path.join(os.tmpdir(), "qwenguard-rebuild-"));
    t.teardown(() => rmSync(root, {recursive: true, force: true}));
    for (const entry of ["package.json", "CMakeLists.txt", "native", "scripts", path.join("dist", "src"), path.join("dist", "gguf")])
        cpSync(path.join(packageRoot, entry), path.join(root, entry), {recursive: true});
    symlinkSync(path.join(packageRoot, "node_modules"), path.join(root, "node_modules"), "dir");

    // A script file, not `node -e`: node-llama-cpp forks the process with its execArgv to test its binaries.
    const script = path.join(root, "load.mjs");
    writeFileSync(script, "const {getRuntimeInfo} = await import('./dist/src/index.js');\n" +
        "console.log((await getRuntimeInfo({gpu: false})).llamaCpp.release);\n");
    const load = () => spawnSync(process.execPath, [script], {encoding: "utf8"});
    const loadAsync = () => new Promise<{status: number | null, stdout: string, stderr: string}>((resolve) => {
        const child = spawn(process.execPath, [script]);
        let stdout = "", stderr = "";
        child.stdout.on("data", (data: Buffer) => void (stdout += data));
        child.stderr.on("data", (data: Buffer) => void (stderr += data));
        child.on("close", (status) => resolve({status, stdout, stderr}));
    });

    // two processes at once: one builds, the other waits for it
    const both = await Promise.all([loadAsync(), loadAsync()]);
    for (const run of both) {
        t.equal(run.status, 0, run.stderr);
        t.match(run.stdout, /^v\d/);
    }
    const stderr = both.map((run) => run.stderr).join("");
    t.match(stderr, /qwenguard: the native addon build\/Release\/qwenguard\.node has not been built; building it now/);
    t.equal(stderr.match(/qwenguard: native addon built in/g)?.length, 1, "built once");

    const second = load();
    t.equal(second.status, 0, second.stderr);
    t.equal(second.stderr, "", "an up-to-date addon is loaded without a build");

    appendFileSync(path.join(root, "native", "addon.cpp"), "\n// changed\n");
    const third = load();
    t.equal(third.status, 0, third.stderr);
    t.match(third.stderr, /qwenguard: the native sources changed since the addon was built; building it now/);
});
