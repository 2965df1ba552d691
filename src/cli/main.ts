// The qwenguard CLI: a commander program, one file per command. The commands import the library's modules directly,
// not through the public barrel (src/index.ts), which loads every module at once; the heavy dependencies
// (node-llama-cpp, Fastify, BullMQ) are imported when a command gets to use them, so a usage error or --help does not
// pay their start-up (test/cli/startup.test.ts).
import {Command, CommanderError} from "commander";
import {packageVersion} from "../native/runtimeInfo.js";
import {UsageError} from "./UsageError.js";
import {registerConvertCommand} from "./convertCommand.js";
import {registerInfoCommand} from "./infoCommand.js";
import {registerQuantizeCommand} from "./quantizeCommand.js";
import {registerStreamCommand} from "./streamCommand.js";
import {registerCheckCommand} from "./checkCommand.js";
import {registerBatchCommand} from "./batchCommand.js";
import {registerServeCommand} from "./serveCommand.js";
import {registerEvalCommand} from "./evalCommand.js";
import {registerWorkerCommand} from "./workerCommand.js";
import {registerPullCommands} from "./pullCommand.js";
import {printVersion} from "./versionCommand.js";

/** Exit codes shared by all commands. */
export const exitCodes = {ok: 0, flagged: 1, usage: 2} as const;

/**
 * Runs the `qwenguard` CLI.
 * @param args the arguments after the program name
 * @returns the process exit code
 */
export async function main(args: string[]): Promise<number> {
    const write = (text: string) => void process.stdout.write(text);
    if (args.length === 1 && (args[0] === "--version" || args[0] === "-V")) {
        await printVersion(write);
        return exitCodes.ok;
    }

    const program = new Command("qwenguard")
        .description("Run the Qwen3Guard safety models (Gen and Stream) locally on llama.cpp")
        .option("-V, --version", "print the version, the llama.cpp release and the backend in use")
        .showHelpAfterError()
        .exitOverride()
        .configureOutput({writeOut: write, writeErr: (text) => void process.stderr.write(text)});
    program.addHelpText("after", `\nqwenguard ${packageVersion()}`);
    let exitCode: number = exitCodes.ok;
    const setExitCode = (code: number) => {
        exitCode = code;
    };
    registerPullCommands(program);
    registerConvertCommand(program);
    registerQuantizeCommand(program);
    registerInfoCommand(program);
    registerStreamCommand(program, setExitCode);
    registerCheckCommand(program, setExitCode);
    registerBatchCommand(program, setExitCode);
    registerServeCommand(program, setExitCode);
    registerEvalCommand(program, setExitCode);
    registerWorkerCommand(program);

    try {
        if (args.length === 0) {
            program.outputHelp();
            return exitCodes.usage;
        }
        await program.parseAsync(args, {from: "user"});
        return exitCode;
    } catch (error) {
        if (error instanceof CommanderError)
            return error.exitCode === 0 ? exitCodes.ok : exitCodes.usage;
        // usage mistakes and bad input (missing files, malformed models, options out of range) end here
        process.stderr.write(`qwenguard: ${error instanceof Error ? error.message : String(error)}\n`);
        if (process.env.QWENGUARD_DEBUG != null && error instanceof Error && !(error instanceof UsageError))
            process.stderr.write(`${error.stack}\n`);
        return exitCodes.usage;
    }
}
