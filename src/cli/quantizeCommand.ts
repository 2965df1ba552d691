import type {Command} from "commander";
import {quantizeModel, quantizationTypes} from "../quantize/quantizeModel.js";

/** `qwenguard quantize`: llama.cpp quantization of a GGUF model (the Stream head stays untouched). */
export function registerQuantizeCommand(program: Command): void {
    program.command("quantize")
        .description("quantize a GGUF model with llama.cpp (a Stream backbone's head file is left untouched)")
        .argument("<in>", "input GGUF")
        .argument("<out>", "output GGUF")
        .argument("<type>", Object.keys(quantizationTypes).join(", "))
        .option("-t, --threads <n>", "CPU threads")
        .action(async (input: string, output: string, type: string, options: {threads?: string}) => {
            const progress = process.stderr.isTTY
                ? ({bytesWritten}: {bytesWritten: number}) => void process.stderr.write(`\rquantizing… ${(bytesWritten / 1e6).toFixed(0)} MB written`)
                : undefined;
            const result = await quantizeModel(input, output, type, {
                threads: options.threads != null ? Number(options.threads) : undefined,
                onProgress: progress
            });
            if (progress != null)
                process.stderr.write("\n");
            process.stdout.write(`${result.type}: wrote ${result.outputPath} (${(result.bytes / 1e6).toFixed(1)} MB) in ${(result.elapsedMs / 1000).toFixed(1)} s\n`);
            if (result.headPath != null)
                process.stdout.write(`copied the Stream head to ${result.headPath}\n`);
        });
}
