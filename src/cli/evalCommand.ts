import {existsSync, writeFileSync} from "node:fs";
import type {Command} from "commander";
import {evalReportHtml} from "../eval/evalReportHtml.js";
import {evaluateFile} from "../eval/evaluateFile.js";
import {readGuardVariant} from "../gen/readGuardVariant.js";
import type {BinaryMetrics, TargetMetrics} from "../eval/EvalTally.js";
import type {EvalReport} from "../eval/evaluateFile.js";
import type {EvalTarget} from "../eval/evalLabels.js";
import {UsageError} from "./UsageError.js";
import {failAsUsage} from "./batchCommand.js";
import {INTERRUPTED, ProgressReporter, abortOnInterrupt, duration} from "./batchProgress.js";
import {integerFlag, parseMode, parsePolicy, probabilityFlag} from "./flags.js";
import {paint} from "./paint.js";
import {resolveModelFlag} from "./pullReporter.js";

interface EvalCommandOptions {
    model: string[],
    head?: string,
    target: string,
    policy: string,
    targetPrecision?: string,
    targetRecall?: string,
    html?: string,
    json?: boolean,
    workDir?: string,
    format?: string,
    labelColumn?: string,
    categoryColumn?: string,
    refusalColumn?: string,
    idColumn?: string,
    promptColumn?: string,
    responseColumn?: string,
    concurrency?: string,
    threads?: string,
    contextSize?: string,
    mode?: string,
    windows?: boolean,
    limit?: string,
    strict?: boolean,
    overwrite?: boolean,
    misses?: string,
    sample?: string
}

/** `qwenguard eval`: how well a guard does on labelled records, at which threshold, and how early Stream stops. */
export function registerEvalCommand(program: Command, setExitCode: (code: number) => void): void {
    program.command("eval")
        .description("evaluate guard models on labelled records: strict/loose F1, threshold sweep, categories, refusal, Stream timeliness; " +
            "rerun the same command to resume")
        .argument("<input>", "JSONL or CSV records with a label: {prompt, response?, label} or {messages, label}, or the official " +
            "Qwen3GuardTest layout {message, label, unsafe_start_index?, unsafe_end_index?}")
        .option("-m, --model <model>", "a model name or GGUF (repeat for a second model, judged side by side; default gen-0.6b)",
            (value: string, previous: string[]) => [...previous, value], [] as string[])
        .option("--head <file>", "the Stream model's head GGUF (default: the one its backbone names, beside it)")
        .option("--target <target>", "what to judge: auto (each record's last message), prompt, or response", "auto")
        .option("--policy <policy>", "the policy whose flags are scored besides strict and loose: strict, loose, or a threshold", "strict")
        .option("--target-precision <p>", "also find the threshold with the highest recall at this precision or more")
        .option("--target-recall <r>", "also find the threshold with the highest precision at this recall or more")
        .option("--html <file>", "write the report as one self-contained HTML page")
        .option("--json", "print every figure as JSON instead of the table")
        .option("-o, --work-dir <dir>", "where each model's predictions (resumable) and the disagreements go (default: <input>.eval)")
        .option("--format <format>", "jsonl or csv (default: from the input's extension)")
        .option("--label-column <name>", "the label field or column: Safe, Unsafe or Controversial, any case (default: label)")
        .option("--category-column <name>", "the category field or column (default: category, when present)")
        .option("--refusal-column <name>", "the refusal field or column: Yes/No (default: refusal, when present)")
        .option("--id-column <name>", "CSV: the id column (default: id, when present)")
        .option("--prompt-column <name>", "CSV: the prompt column (default: prompt)")
        .option("--response-column <name>", "CSV: the response column (default: response, when present)")
        .option("-c, --concurrency <n>", "records judged at once, in parallel sequences")
        .option("-t, --threads <n>", "CPU threads")
        .option("--context-size <n>", "Gen: tokens per request; Stream: KV cells shared by the sessions")
        .option("--mode <mode>", "Gen: score (probabilities, the default) or generate (greedy answer, parsed)")
        .option("--windows", "Gen: judge a message over the context in overlapping windows instead of failing")
        .option("--limit <n>", "evaluate at most n records")
        .option("--strict", "stop at the first bad record instead of counting it")
        .option("--overwrite", "start again instead of resuming the predictions in the work directory")
        .option("--misses <n>", "misses of each kind shown per model and target (default 10)")
        .option("--sample <n>", "disagreements between two models kept, with their text (default 50)")
        .action(async (input: string, options: EvalCommandOptions) => setExitCode(await runEval(input, options)));
}

async function runEval(input: string, options: EvalCommandOptions): Promise<number> {
    if (!["auto", "prompt", "response"].includes(options.target))
        throw new UsageError(`Expected auto, prompt or response for --target but received ${JSON.stringify(options.target)}`);
    if (options.format != null && options.format !== "jsonl" && options.format !== "csv")
        throw new UsageError(`Expected jsonl or csv for --format but received ${JSON.stringify(options.format)}`);
    if (options.model.length > 2)
        throw new UsageError(`Expected at most two models (-m) but received ${options.model.length}`);
    const csvColumns = {id: options.idColumn, prompt: options.promptColumn, response: options.responseColumn};
    const given = Object.entries(csvColumns).filter(([, value]) => value != null);
    if (given.length > 0 && options.format !== "csv" && !input.toLowerCase().endsWith(".csv"))
        throw new UsageError("--id-column, --prompt-column and --response-column apply to CSV input");
    const policy = parsePolicy(options.policy);
    const targetPrecision = probabilityFlag("--target-precision", options.targetPrecision);
    const targetRecall = probabilityFlag("--target-recall", options.targetRecall);
    if (!existsSync(input))
        throw new UsageError(`Input file ${input} does not exist`);
    const models: Array<{model: string, head?: string}> = [];
    for (const model of options.model.length > 0 ? options.model : ["gen-0.6b"])
        models.push({model: await resolveModelFlag(model)});
    if (options.head != null) {
        const streams = await failAsUsage(async () => {
            const variants = await Promise.all(models.map(({model}) => readGuardVariant(model)));
            return models.filter((_, index) => variants[index] === "stream-backbone");
        });
        if (streams.length !== 1)
            throw new UsageError(streams.length === 0 ? "--head applies to a Stream model, and no -m is a Stream backbone"
                : "--head is ambiguous with two Stream models: keep each head beside its backbone instead");
        streams[0].head = options.head;
    }

    const controller = new AbortController();
    const removeHandlers = abortOnInterrupt(controller);
    const reporters = models.map((_, index) => new ProgressReporter(models.length > 1 ? `model ${index + 1}/${models.length}: ` : ""));
    try {
        const report = await failAsUsage(() => evaluateFile(input, {
            models, target: options.target as EvalTarget, policy, targetPrecision, targetRecall, workDir: options.workDir,
            format: options.format as "jsonl" | "csv" | undefined, columns: Object.fromEntries(given),
            labels: {label: options.labelColumn, category: options.categoryColumn, refusal: options.refusalColumn},
            concurrency: integerFlag("--concurrency", options.concurrency), threads: integerFlag("--threads", options.threads),
            contextSize: integerFlag("--context-size", options.contextSize), mode: parseMode(options.mode),
            ...(options.windows === true ? {longInput: "windows" as const} : {}), limit: integerFlag("--limit", options.limit),
            strict: options.strict === true, overwrite: options.overwrite === true,
            misses: countFlag("--misses", options.misses, 1000), sample: countFlag("--sample", options.sample, 10_000),
            signal: controller.signal,
            onProgress: (model, progress) => {
                if (model > 0)
                    reporters[model - 1].finish(); // the previous model is done
                reporters[model].update(progress);
            },
            onWarning: (message) => void process.stderr.write(`qwenguard: warning: ${message}\n`)
        }));
        for (const reporter of reporters)
            reporter.finish();
        if (options.html != null)
            writeFileSync(options.html, evalReportHtml(report));
        process.stdout.write(options.json === true ? JSON.stringify(report) + "\n" : reportTable(report, options.html));
        return report.complete ? 0 : INTERRUPTED;
    } finally {
        for (const reporter of reporters)
            reporter.finish();
        removeHandlers();
    }
}

function countFlag(flag: string, value: string | undefined, max: number): number | undefined {
    if (value == null)
        return undefined;
    if (!/^\d+$/.test(value) || Number(value) > max)
        throw new UsageError(`Expected an integer from 0 to ${max} for ${flag} but received ${JSON.stringify(value)}`);
    return Number(value);
}

/** Text from the records (categories, error messages quoting them) without control characters: it goes to a terminal. */
function printable(text: string): string {
    return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (char) => char === "\t" ? " " : `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The report as terminal tables (coloured on a terminal). */
export function reportTable(report: EvalReport, html?: string): string {
    const out: string[] = [];
    const bold = (text: string) => paint("bold", text, process.stdout);
    for (const target of ["prompt", "response"] as const) {
        const models = report.models.filter((model) => model.targets[target] != null);
        if (models.length === 0)
            continue;
        const labels = models[0].targets[target]!.labels;
        out.push(bold(`${target === "prompt" ? "Prompts" : "Responses"}: ${models[0].targets[target]!.records} labelled ` +
            `(Safe ${labels.Safe}, Controversial ${labels.Controversial}, Unsafe ${labels.Unsafe})`));
        const rows: string[][] = [["model", "mode", "precision", "recall", "F1", "accuracy", "TP", "FP", "FN", "TN"]];
        for (const model of models) {
            const metrics = model.targets[target]!;
            const policyName = typeof report.policy === "string" ? report.policy : `policy ${report.policy.minProb}`;
            const modes: Array<[string, BinaryMetrics]> = [["strict", metrics.strict], ["loose", metrics.loose]];
            if (typeof report.policy !== "string")
                modes.push([policyName, metrics.policy]);
            modes.forEach(([mode, m], i) => rows.push([i === 0 ? `${model.name} (${model.kind})` : "", mode, fixed(m.precision), fixed(m.recall),
                fixed(m.f1), fixed(m.accuracy), String(m.tp), String(m.fp), String(m.fn), String(m.tn)]));
        }
        out.push(table(rows, new Set([4])));
        for (const model of models)
            out.push(...modelDetails(model.name, model.targets[target]!));
        const agreement = report.agreement?.[target];
        if (agreement != null)
            out.push(`  agreement: ${agreement.records} records, same level ${share(agreement.sameLevel, agreement.records)}, same strict decision ` +
                `${share(agreement.sameDecision, agreement.records)} (κ ${fixed(agreement.kappa)}), ${plural(agreement.disagreements, "disagreement")}`);
        out.push("");
    }
    if (report.errors.count > 0) {
        out.push(paint("yellow", `bad records: ${report.errors.count} (not judged by ${report.models.length > 1 ? "some model: left out of every model's figures" : "the model"})`,
            process.stdout));
        for (const error of report.errors.first.slice(0, 5))
            out.push(`  line ${error.line}: ${printable(error.error)}`);
        if (report.errors.count > 5)
            out.push(`  … (all of them: ${report.models[0].predictions}.errors.jsonl)`);
    }
    for (const model of report.models)
        out.push(`${model.name}: ${model.errors > 0 ? `${plural(model.errors, "error")}, ` : ""}${model.processed > 0 ? `${model.processed} records judged in ${duration(model.elapsedMs / 1000)} (${model.recordsPerSecond.toFixed(2)} records/s)`
            : "nothing new to judge"}${model.records > model.processed ? `, ${model.records - model.processed} from an earlier run` : ""}; predictions ${model.predictions}`);
    if (report.disagreementsFile != null)
        out.push(`disagreements (sample): ${report.disagreementsFile}`);
    if (html != null)
        out.push(`report: ${html}`);
    if (!report.complete)
        out.push(paint("yellow", "incomplete: rerun the same command to resume", process.stdout));
    return out.join("\n") + "\n";
}

function modelDetails(name: string, metrics: TargetMetrics): string[] {
    const lines = [`  ${name}:`];
    const {best, targetPrecision, targetRecall} = metrics.sweep;
    if (best != null)
        lines.push(`    best F1 ${fixed(best.f1)} at threshold ${best.threshold} (precision ${fixed(best.precision)}, recall ${fixed(best.recall)}): --policy ${best.threshold}`);
    for (const [what, found] of [["precision", targetPrecision], ["recall", targetRecall]] as const)
        if (found != null)
            lines.push(found.point == null ? `    no threshold reaches ${what} ${found.target}`
                : `    ${what} ≥ ${found.target}: threshold ${found.point.threshold} (precision ${fixed(found.point.precision)}, recall ${fixed(found.point.recall)}, F1 ${fixed(found.point.f1)})`);
    const {labels, predicted, counts} = metrics.confusion;
    lines.push("    confusion (rows: label, columns: verdict):", ...matrixLines(labels, predicted, counts));
    if (metrics.categories != null) {
        const categories = metrics.categories;
        lines.push(`    categories: ${categories.perCategory.filter((row) => row.support > 0)
            .map((row) => `${printable(row.category)} P ${fixed(row.precision)} R ${fixed(row.recall)} (${row.support})`).join("; ")}`);
        lines.push("    category confusion (rows: labelled, columns: predicted):",
            ...matrixLines(categories.labels.map(printable), categories.predicted.map(printable), categories.counts));
    }
    if (metrics.refusal != null)
        lines.push(`    refusal: F1 ${fixed(metrics.refusal.f1)}, accuracy ${fixed(metrics.refusal.accuracy)} (${metrics.refusal.tp + metrics.refusal.fp + metrics.refusal.fn + metrics.refusal.tn} records)`);
    const timeliness = metrics.timeliness;
    if (timeliness != null && timeliness.records + timeliness.withoutSpan + timeliness.badSpans > 0)
        lines.push(`    timeliness (${timeliness.records} unsafe responses with a span): ${Object.entries(timeliness.bins).map(([bin, n]) => `${bin} ${n}`).join(", ")}; ` +
            `exact hit ${percent(timeliness.exactHitRate)}, stopped within 128 tokens ${percent(timeliness.stopRateWithin128)}` +
            `${timeliness.withoutSpan > 0 ? `; ${timeliness.withoutSpan} without a span` : ""}${timeliness.badSpans > 0 ? `; ${timeliness.badSpans} spans past the text` : ""}`);
    return lines;
}

/** A confusion matrix as indented table lines: a header of the columns, then a row per label. */
function matrixLines(labels: readonly string[], columns: readonly string[], counts: number[][]): string[] {
    return table([["", ...columns], ...labels.map((label, row) => [label, ...counts[row].map(String)])]).split("\n").map((line) => `      ${line}`);
}

function table(rows: string[][], emphasis: ReadonlySet<number> = new Set()): string {
    const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
    return rows.map((row, r) => "  " + row.map((cell, column) => {
        const padded = column <= 1 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]);
        return r > 0 && emphasis.has(column) ? paint("bold", padded, process.stdout) : padded;
    }).join("  ").trimEnd()).join("\n");
}

function fixed(value: number | null | undefined): string {
    return value == null ? "–" : value.toFixed(3);
}

function percent(value: number | null): string {
    return value == null ? "–" : `${(100 * value).toFixed(1)}%`;
}

function plural(n: number, noun: string): string {
    return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function share(n: number, of: number): string {
    return of > 0 ? `${(100 * n / of).toFixed(1)}%` : "–";
}
