// Running the CLI as a user does: a child process of bin/qwenguard.js, its output collected.

import {spawn} from "node:child_process";
import path from "node:path";
import {packageRoot} from "../../src/native/addonBuild.js";

export const cli = path.join(packageRoot, "bin", "qwenguard.js");

/** How a CLI run ended. */
export interface CliRun {
    status: number | null,
    stdout: string,
    stderr: string
}

/** Runs the CLI without colours, with `input` on stdin and `env` added to the environment. */
export function runCli(args: readonly string[], input: string | Buffer = "", env: Record<string, string> = {}): Promise<CliRun> {
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [cli, ...args], {env: {...process.env, NO_COLOR: "1", ...env}});
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
        child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
        child.on("error", reject);
        child.on("close", (status) => resolve({status, stdout, stderr}));
        child.stdin.end(input);
    });
}
