import type {Command} from "commander";
import {describeGguf, formatDescription} from "../../gguf/index.js";

/** `qwenguard info`: what a GGUF file is. */
export function registerInfoCommand(program: Command): void {
    program.command("info")
        .description("describe a GGUF file: architecture, variant (gen / stream backbone / stream head), sizes, quantization, labels")
        .argument("<file>", "a GGUF file")
        .option("--json", "print the description as JSON")
        .action(async (file: string, options: {json?: boolean}) => {
            const description = await describeGguf(file);
            process.stdout.write(options.json ? JSON.stringify(description, jsonBigInt, 2) + "\n" : formatDescription(description) + "\n");
        });
}

function jsonBigInt(_key: string, value: unknown): unknown {
    return typeof value === "bigint" ? value.toString() : value;
}
