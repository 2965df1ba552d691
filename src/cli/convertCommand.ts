import path from "node:path";
import type {Command} from "commander";
import {convert} from "../../gguf/convert/convert.js";
import type {OutType} from "../../gguf/convert/ModelConverter.js";
import {UsageError} from "./UsageError.js";

const outTypes: readonly OutType[] = ["f32", "f16", "bf16", "q8_0"];

/** `qwenguard convert`: Hugging Face checkpoint → GGUF (Gen, or Stream backbone + head). */
export function registerConvertCommand(program: Command): void {
    program.command("convert")
        .description("convert a Hugging Face Qwen3Guard checkpoint (Gen or Stream) to GGUF; Stream also writes <out>.head.gguf")
        .argument("<hf-dir>", "checkpoint folder: config.json, tokenizer files, safetensors (single or sharded)")
        .option("-o, --outfile <file>", "output GGUF (default: <hf-dir name>-<outtype>.gguf in the current folder)")
        .option("--outtype <type>", `weight type: ${outTypes.join(", ")}`, "f16")
        .action(async (hfDir: string, options: {outfile?: string, outtype: string}) => {
            options.outtype = options.outtype.toLowerCase(); // Q8_0 as quantize spells it
            if (!(outTypes as readonly string[]).includes(options.outtype))
                throw new UsageError(`Expected one of ${outTypes.join(", ")} for --outtype but received ${JSON.stringify(options.outtype)}`);
            const outFile = options.outfile ?? `${path.basename(path.resolve(hfDir))}-${options.outtype}.gguf`;
            const started = performance.now();
            const result = await convert(hfDir, {outFile, outType: options.outtype as OutType});
            const seconds = ((performance.now() - started) / 1000).toFixed(1);
            process.stdout.write(`${result.architecture} → ${result.variant}, ${result.tensors.length} tensors, ${result.outType}, ${seconds} s\n`);
            for (const file of [result.outFile, ...result.companionFiles])
                process.stdout.write(`wrote ${file}\n`);
        });
}
