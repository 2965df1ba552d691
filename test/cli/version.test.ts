import {spawnSync} from "node:child_process";
import path from "node:path";
import t from "tap";
import {packageRoot} from "../../src/native/addonBuild.js";
import {packageVersion} from "../../src/index.js";

const cli = path.join(packageRoot, "bin", "qwenguard.js");
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], {encoding: "utf8"});

t.test("usage errors exit with 2 and say what was wrong", async (t) => {
    const unknown = run("no-such-command");
    t.equal(unknown.status, 2);
    t.match(unknown.stderr, /error: (unknown command|too many arguments)/);

    const noArgs = run();
    t.equal(noArgs.status, 2);
    t.match(noArgs.stdout, /Usage: qwenguard/);
});

t.test("--version names the package version, the llama.cpp release and the backend", async (t) => {
    const result = run("--version");
    t.equal(result.status, 0, result.stderr);
    const lines = result.stdout.trimEnd().split("\n");
    t.equal(lines[0], `qwenguard ${packageVersion()}`);
    t.match(lines[1], /^llama\.cpp v\d+\.\d+\.\d+ \(commit [0-9a-f]{7}, libllama \S+\)$/);
    t.match(lines[2], /^backend (CPU( \(.+\))?|\S+ \(.+\))$/);
});

t.test("--help lists the commands and exits with 0", async (t) => {
    const result = run("--help");
    t.equal(result.status, 0);
    t.match(result.stdout, /Usage: qwenguard \[options\]/);
});
