import type {Command} from "commander";
import {OFFICIAL_MODELS} from "../hub/modelNames.js";
import {listCachedModels, modelCacheDir, removeCachedModel} from "../hub/modelCache.js";
import {pullModel} from "../hub/pullModel.js";
import type {CachedModel} from "../hub/modelCache.js";
import {UsageError} from "./UsageError.js";
import {integerFlag} from "./flags.js";
import {pullReporter} from "./pullReporter.js";

const NAMES_HELP = `${Object.keys(OFFICIAL_MODELS).join(", ")} (each with an optional :TYPE, e.g. gen-4b:q4_k_m; default q8_0), ` +
    "hf:OWNER/REPO[@REV][:TYPE] (a Qwen3Guard checkpoint repository), hf:OWNER/REPO[@REV]/FILE.gguf, or an https:// URL of a GGUF";

/** `qwenguard pull` and `qwenguard models`: the model cache. */
export function registerPullCommands(program: Command): void {
    program.command("pull")
        .description("download models by name into the model cache (checkpoints are converted and quantized there)")
        .argument("<names...>", NAMES_HELP)
        .option("--keep-source", "keep the downloaded checkpoint (in the model's folder, under source/)")
        .option("--json", "write the progress events as JSON lines on stdout")
        .option("-t, --threads <n>", "CPU threads of the quantizer")
        .addHelpText("after", "\nThe cache: $QWENGUARD_MODELS, else $XDG_CACHE_HOME/qwenguard/models, else ~/.cache/qwenguard/models.\n" +
            "The hub: HF_ENDPOINT, HF_TOKEN (or the token file under HF_HOME), HF_HUB_OFFLINE=1.")
        .action(async (names: string[], options: {keepSource?: boolean, json?: boolean, threads?: string}) => {
            const threads = integerFlag("--threads", options.threads);
            const report = pullReporter(options.json === true ? process.stdout : process.stderr, options.json === true);
            const controller = new AbortController();
            const interrupt = () => controller.abort(new UsageError("Interrupted: the download so far is kept, and the next pull resumes it"));
            process.once("SIGINT", interrupt);
            process.once("SIGTERM", interrupt);
            try {
                for (const name of names) {
                    const model = await pullModel(name, {onProgress: report, signal: controller.signal, keepSource: options.keepSource, threads});
                    if (options.json !== true)
                        process.stdout.write(`${model.name}\t${model.path}\n`);
                }
            } finally {
                process.off("SIGINT", interrupt);
                process.off("SIGTERM", interrupt);
            }
        });

    const models = program.command("models")
        .description("list the models in the model cache")
        .option("--json", "one JSON object per model (its manifest, path and size)")
        .action(async (options: {json?: boolean}) => {
            const cached = await listCachedModels();
            if (options.json === true) {
                for (const model of cached)
                    process.stdout.write(JSON.stringify({...model.manifest, path: model.path, headPath: model.headPath, bytes: model.bytes}) + "\n");
                return;
            }
            if (cached.length === 0) {
                process.stdout.write(`No models in ${modelCacheDir()}: pull one with \`qwenguard pull gen-0.6b\`\n`);
                return;
            }
            const rows = [["NAME", "VARIANT", "TYPE", "SIZE", "SOURCE", "REVISION"], ...cached.map(describe)];
            const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
            for (const row of rows)
                process.stdout.write(row.map((cell, column) => column === row.length - 1 ? cell : cell.padEnd(widths[column])).join("  ") + "\n");
        });
    models.command("rm")
        .description("delete models from the model cache")
        .argument("<names...>", "models, by the name they were pulled with")
        .action(async (names: string[]) => {
            for (const name of names) {
                const removed = await removeCachedModel(name);
                if (removed === undefined)
                    throw new UsageError(`${name} is not in the model cache (${modelCacheDir()}): \`qwenguard models\` lists what is`);
                process.stdout.write(`removed ${removed.name} (${(removed.bytes / 1e6).toFixed(1)} MB)\n`);
            }
        });
}

function describe(model: CachedModel): string[] {
    const {manifest} = model;
    const source = manifest.source.url ?? [manifest.source.repo, manifest.source.file].filter((part) => part !== undefined).join("/");
    const revision = manifest.source.commit !== undefined ? `${manifest.source.revision ?? "main"}@${manifest.source.commit.slice(0, 10)}` : "-";
    return [manifest.name, manifest.variant, manifest.type, `${(model.bytes / 1e6).toFixed(1)} MB`, source, revision];
}
