import {createHash} from "node:crypto";
import {existsSync, mkdirSync, writeFileSync} from "node:fs";
import path from "node:path";
import {formatOf, moderateFile} from "../batch/moderateFile.js";
import type {BatchProgress, BatchSummary, ModerateFileOptions, RecordAnnotator} from "../batch/moderateFile.js";
import {parseOutputLine} from "../batch/batchOutput.js";
import type {OutputLine} from "../batch/batchOutput.js";
import {readLines} from "../batch/readLines.js";
import {DEFAULT_MAX_RECORD_BYTES, readRecords} from "../batch/readRecords.js";
import type {BatchInputFormat, CsvColumns, InputRecord} from "../batch/readRecords.js";
import type {Message} from "../conversation/messages.js";
import {resolveGenPolicy} from "../gen/genPolicy.js";
import type {GenPolicyOption} from "../gen/genPolicy.js";
import {resolveModel} from "../hub/resolveModel.js";
import type {JudgeOptions} from "../moderation/Judge.js";
import {packageVersion} from "../native/runtimeInfo.js";
import {integerOption, oneOfOption, stringOption} from "../options.js";
import type {RiskLevel} from "../stream/types.js";
import {SPAN_FIELDS, evalTargets, readLabels, targetConversation} from "./evalLabels.js";
import type {EvalTarget, LabelFields, RecordLabels} from "./evalLabels.js";
import {TargetTally} from "./EvalTally.js";
import type {EvalLine, TargetMetrics} from "./EvalTally.js";
import {labelPosition} from "./spanPositions.js";

export interface EvaluateFileOptions extends Pick<JudgeOptions, "mode" | "longInput" | "concurrency" | "threads" | "contextSize" | "gpu" | "onWarning"> {
    /** The models to evaluate, each a model name or a GGUF (Gen, or a Stream backbone with its head beside it or given). */
    models: Array<string | {model: string, head?: string}>,
    /** Default `"auto"`: each record's last message (the response when the record has one). */
    target?: EvalTarget,
    /** Label field names (JSONL keys or CSV columns). */
    labels?: LabelFields,
    /** Default: from the input's extension. */
    format?: BatchInputFormat,
    /** CSV: the id, prompt and response columns. */
    columns?: CsvColumns,
    /** The policy whose `flagged` verdicts are scored (besides strict and loose); default `"strict"`. */
    policy?: GenPolicyOption,
    /** The sweep's threshold with the highest recall at this precision or more. */
    targetPrecision?: number,
    /** The sweep's threshold with the highest precision at this recall or more. */
    targetRecall?: number,
    /** Evaluate at most this many records (a rerun with a smaller limit counts only that many). */
    limit?: number,
    /** Stop at the first bad record instead of counting it. */
    strict?: boolean,
    /** Start again instead of resuming the predictions in `workDir`. */
    overwrite?: boolean,
    maxRecordBytes?: number,
    /** Where the predictions of each model (resumable), and the disagreements, are written; default `<input>.eval`. */
    workDir?: string,
    /** Misses of each kind kept for the report, per model and target; default 10. */
    misses?: number,
    /** Disagreements between two models kept (with their text); default 50. */
    sample?: number,
    /** Stop taking records (a rerun resumes). */
    signal?: AbortSignal,
    /** Progress of the model being run (0-based among `models`). */
    onProgress?: (model: number, progress: BatchProgress) => void
}

/** Two models on the same records. */
export interface Agreement {
    records: number,
    /** Same risk level. */
    sameLevel: number,
    /** Same strict decision (Controversial counts as unsafe), and Cohen's kappa of it. */
    sameDecision: number,
    kappa: number | null,
    disagreements: number,
    /** A sample of the records where the strict decisions differ (the same sample on every run). */
    sample: Array<{line: number, id?: string | number, label: RiskLevel, verdicts: Array<{level: RiskLevel, score: number}>,
        text?: {prompt: string, response?: string}}>
}

export interface ModelEvaluation {
    /** The file's name without its extension. */
    name: string,
    model: string,
    kind: "gen" | "stream",
    predictions: string,
    /** Output lines: judged records and errors. */
    records: number,
    errors: number,
    /** This run's speed (resumed records are not counted). */
    processed: number,
    elapsedMs: number,
    recordsPerSecond: number,
    tokensPerSecond: number,
    targets: Partial<Record<"prompt" | "response", TargetMetrics>>
}

/** Everything `qwenguard eval` computed: JSON, the terminal table and the HTML report are made of it. */
export interface EvalReport {
    tool: "qwenguard eval",
    version: string,
    created: string,
    input: string,
    target: EvalTarget,
    policy: GenPolicyOption,
    models: ModelEvaluation[],
    /** The records some model could not judge (its error lines: bad labels and records, the same for every model, and
     * records over one model's context), left out of every model's figures so that all are scored on the same records. */
    errors: {count: number, first: Array<{line: number, error: string}>},
    blankLines: number,
    agreement: Partial<Record<"prompt" | "response", Agreement>> | null,
    disagreementsFile: string | null,
    /** False when the run was stopped (rerun the same command to resume). */
    complete: boolean
}

const FIRST_ERRORS = 20;
const TEXT_LIMIT = 600;

/**
 * Evaluates one or more guard models on a labelled file: confusion matrices, precision / recall / F1 of "unsafe"
 * in strict and loose mode, a threshold sweep, categories, refusal and, for Stream, how early the rule fires
 * relative to the labelled unsafe span. Each model's verdicts go to a predictions file (a `batch` output with the
 * labels beside them), resumable like `batch`; the figures are then counted from those files in constant memory.
 * @throws TypeError for bad options; the errors of {@link moderateFile} (input, resume, strict)
 * @example
 * const report = await evaluateFile("labelled.jsonl", {models: ["gen-0.6b", "stream-0.6b"]});
 * console.log(report.models[0].targets.response?.strict.f1);
 */
export async function evaluateFile(input: string, options: EvaluateFileOptions): Promise<EvalReport> {
    if (options == null || typeof options !== "object")
        throw new TypeError("Expected an options object {models, …}");
    if (typeof input !== "string" || input.length === 0)
        throw new TypeError("Expected the input file path");
    if (!Array.isArray(options.models) || options.models.length === 0 || options.models.length > 2)
        throw new TypeError("Expected one or two models for \"models\"");
    const target = oneOfOption("target", options.target ?? "auto", evalTargets);
    const policy = options.policy ?? "strict";
    const policyStrict = resolveGenPolicy(policy).controversial;
    const fields: Required<LabelFields> = {label: "label", category: "category", refusal: "refusal", ...definedOf(options.labels ?? {})};
    for (const [name, value] of Object.entries(fields))
        stringOption(`labels.${name}`, value);
    const probability = (name: string, value: number | undefined) => {
        if (value != null && !(typeof value === "number" && value > 0 && value <= 1))
            throw new TypeError(`Expected a number in (0, 1] for "${name}" but received ${String(value)}`);
        return value;
    };
    const targets = {precision: probability("targetPrecision", options.targetPrecision), recall: probability("targetRecall", options.targetRecall)};
    const maxMisses = integerOption("misses", options.misses ?? 10, 0, 1000);
    const sampleSize = integerOption("sample", options.sample ?? 50, 0, 10_000);
    if (!existsSync(input))
        throw new Error(`Input file ${input} does not exist`);
    const format = options.format ?? formatOf(input);
    if (format !== "jsonl" && format !== "csv")
        throw new TypeError(`Expected labelled records in JSONL or CSV but ${input} is read as ${format} (pass "format")`);
    const workDir = options.workDir ?? `${input}.eval`;
    mkdirSync(workDir, {recursive: true});

    const models = await Promise.all(options.models.map(async (given) => {
        const spec = typeof given === "string" ? {model: given} : given;
        return {...spec, model: path.resolve((await resolveModel(stringOption("model", spec.model))).path)};
    }));
    const annotate = evalAnnotator(target, fields);
    const runs: Array<{summary: BatchSummary, kind: "gen" | "stream", file: string}> = [];
    for (const [index, spec] of models.entries()) {
        // another policy changes the flags (and Stream's stops): its predictions are a run of their own
        const file = path.join(workDir, `${index + 1}-${path.basename(spec.model).replace(/\.gguf$/i, "")}${policySuffix(policy)}.jsonl`);
        let kind: "gen" | "stream" | null = null;
        const judgeOptions: ModerateFileOptions = {
            model: spec.model, head: spec.head, policy, mode: options.mode, longInput: options.longInput, concurrency: options.concurrency,
            threads: options.threads, contextSize: options.contextSize, gpu: options.gpu, format, columns: options.columns,
            limit: options.limit, strict: options.strict, overwrite: options.overwrite, maxRecordBytes: options.maxRecordBytes,
            errors: `${file}.errors.jsonl`, signal: options.signal, onWarning: options.onWarning,
            onProgress: (progress) => options.onProgress?.(index, progress),
            annotate: {...annotate, fields: (record, outcome, judge) => {
                kind = judge.kind;
                return annotate.fields(record, outcome, judge);
            }}
        };
        const summary = await moderateFile(input, file, judgeOptions);
        // a run that judged nothing new (resumed, or only bad records) reads the kind from earlier verdicts
        runs.push({summary, kind: kind ?? await kindOfPredictions(file), file});
        if (summary.interrupted)
            break;
    }
    // the files' names without extension; two of the same name are told apart by their place
    const stems = models.map((model) => path.basename(model.model).replace(/\.gguf$/i, ""));
    const names = stems.map((stem, index) => stems.filter((other) => other === stem).length > 1 ? `${stem} #${index + 1}` : stem);
    const complete = runs.length === models.length && runs.every((run) => run.summary.complete);
    const counted = await countPredictions(runs, policyStrict, maxMisses, sampleSize, targets, options.limit ?? Infinity);

    // the text of the records shown (misses, disagreements), read again from the input
    const shown = new Map<number, {prompt: string, response?: string}>();
    const wanted = new Set<number>();
    for (const model of counted.models)
        for (const metrics of Object.values(model.targets))
            for (const miss of [...metrics.misses.falseNegatives, ...metrics.misses.falsePositives])
                wanted.add(miss.line);
    for (const agreement of Object.values(counted.agreement ?? {}))
        for (const record of agreement.sample)
            wanted.add(record.line);
    if (wanted.size > 0)
        for await (const record of readRecords(input, {format, columns: options.columns,
            maxRecordBytes: options.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES}))
            if (wanted.has(record.line) && record.messages != null)
                shown.set(record.line, recordText(record.messages));
    const withText = <T extends {line: number}>(item: T): T => shown.has(item.line) ? {...item, text: shown.get(item.line)} : item;
    for (const model of counted.models)
        for (const metrics of Object.values(model.targets))
            metrics.misses = {falseNegatives: metrics.misses.falseNegatives.map(withText), falsePositives: metrics.misses.falsePositives.map(withText)};
    let disagreementsFile: string | null = null;
    if (counted.agreement != null) {
        for (const agreement of Object.values(counted.agreement))
            agreement.sample = agreement.sample.map(withText);
        disagreementsFile = path.join(workDir, "disagreements.jsonl");
        const records = Object.entries(counted.agreement).flatMap(([name, agreement]) => agreement.sample.map((record) => ({target: name, ...record})))
            .sort((a, b) => a.line - b.line);
        writeFileSync(disagreementsFile, records.map((record) => JSON.stringify({...record, models: models.map((model) => model.model)}) + "\n").join(""));
    }

    return {
        tool: "qwenguard eval", version: packageVersion(), created: new Date().toISOString(), input: path.resolve(input), target, policy,
        models: runs.map((run, index) => {
            const {summary} = run;
            return {
                name: names[index], model: models[index].model, kind: run.kind, predictions: run.file,
                records: summary.counts.records, errors: summary.counts.errors, processed: summary.processed, elapsedMs: summary.elapsedMs,
                recordsPerSecond: summary.recordsPerSecond, tokensPerSecond: summary.tokensPerSecond, targets: counted.models[index].targets
            };
        }),
        errors: counted.errors, blankLines: runs[0]?.summary.blankLines ?? 0, agreement: counted.agreement, disagreementsFile, complete
    };
}

/** The per-record hooks of an evaluation: labels read and checked, the target's conversation, the labels written beside the verdict. */
function evalAnnotator(target: EvalTarget, fields: Required<LabelFields>): RecordAnnotator {
    const labelsOf = new WeakMap<InputRecord, {labels: RecordLabels, messages: Message[]}>();
    return {
        carry: {fields: [...new Set([fields.label, fields.category, fields.refusal, ...SPAN_FIELDS, "message"])], required: [fields.label]},
        settings: {target, fields},
        prepare(record) {
            const labels = readLabels(record.carried ?? {}, fields);
            if (typeof labels === "string")
                return {error: labels};
            const messages = targetConversation(record.messages!, target);
            if (typeof messages === "string")
                return {error: messages};
            labelsOf.set(record, {labels, messages});
            return {messages};
        },
        fields(record, outcome, judge) {
            const {labels, messages} = labelsOf.get(record)!;
            const result = outcome.result!;
            const line: Record<string, unknown> = {
                score: outcome.score, label: labels.label, ...(labels.category != null ? {labelCategory: labels.category} : {}),
                ...(labels.refusal != null && result.target === "response" ? {labelRefusal: labels.refusal} : {})
            };
            if (labels.span != null && result.target === "response") {
                line.span = labels.span;
                if (judge.tokenizer != null && outcome.responseTokens != null) {
                    let position;
                    try {
                        position = labelPosition(judge.tokenizer, messages, outcome.responseTokens, result.stoppedAt?.token ?? null, labels.official);
                    } catch (error) {
                        line.spanError = (error as Error).message; // the record is still counted, only not timed
                        return line;
                    }
                    if (labels.span[1] >= position.labelTokens)
                        line.spanError = `${SPAN_FIELDS[1]} ${labels.span[1]} is past the end of the ${labels.official ? "rendered conversation" : "response"} ` +
                            `(${position.labelTokens} tokens${labels.official ? "" : ": records without \"message\" count the response's own tokens from 0"})`;
                    else
                        line.flagAt = position.flagAt;
                }
            }
            return line;
        }
    };
}

/** Whether a predictions file holds Gen or Stream verdicts (a resumed run that judged nothing new). */
async function kindOfPredictions(file: string): Promise<"gen" | "stream"> {
    for await (const raw of readLines(file, Number.MAX_SAFE_INTEGER)) {
        const value = parseOutputLine(raw.bytes?.toString("utf8") ?? "") as OutputLine & {model?: unknown} | string;
        if (typeof value !== "string" && (value.model === "stream" || value.model === "gen"))
            return value.model;
    }
    return "gen";
}

interface Counted {
    models: Array<{targets: Partial<Record<"prompt" | "response", TargetMetrics>>}>,
    errors: EvalReport["errors"],
    agreement: EvalReport["agreement"]
}

/**
 * Counts every figure from the predictions files: each file on its own (a file may be longer than another: an
 * interrupted run, or an earlier run with a higher limit; only the first `limit` records count), then the two files
 * joined by input line for the agreement.
 */
async function countPredictions(runs: Array<{kind: "gen" | "stream", file: string}>, policyStrict: boolean, maxMisses: number, sampleSize: number,
    targets: {precision?: number, recall?: number}, limit: number): Promise<Counted> {
    // A record that some model could not judge (a bad label or record, the same for every model, or one over a model's
    // context, which another model may hold) is left out of every model's figures: both are scored on the same records.
    const failed = new Set<number>();
    const errors: EvalReport["errors"] = {count: 0, first: []};
    for (const run of runs)
        for await (const line of predictionLines(run.file, limit)) {
            if (line.error == null || failed.has(line.line))
                continue;
            failed.add(line.line);
            // the first lines of the input, whichever model's file names them
            if (errors.first.length < FIRST_ERRORS || line.line < errors.first[errors.first.length - 1].line) {
                errors.first.push({line: line.line, error: line.error});
                errors.first.sort((a, b) => a.line - b.line);
                errors.first.length = Math.min(errors.first.length, FIRST_ERRORS);
            }
        }
    errors.count = failed.size;
    const models: Counted["models"] = [];
    for (const run of runs) {
        const tallies = new Map<"prompt" | "response", TargetTally>();
        for await (const line of predictionLines(run.file, limit)) {
            if (failed.has(line.line))
                continue;
            const tally = tallies.get(line.target) ?? new TargetTally(policyStrict, maxMisses);
            tallies.set(line.target, tally);
            tally.add(line, run.kind);
        }
        models.push({targets: Object.fromEntries([...tallies].map(([name, tally]) => [name, tally.metrics(targets)]))});
    }
    if (runs.length !== 2)
        return {models, errors, agreement: null};

    const agreement = new Map<"prompt" | "response", AgreementTally>();
    const [firstLines, secondLines] = runs.map((run) => predictionLines(run.file, limit));
    let second = await secondLines.next();
    for await (const first of firstLines) {
        while (second.done !== true && second.value.line < first.line)
            second = await secondLines.next();
        if (second.done === true)
            break;
        const other = second.value;
        if (other.line !== first.line || first.error != null || other.error != null || first.target !== other.target)
            continue;
        const tally = agreement.get(first.target) ?? new AgreementTally(sampleSize);
        agreement.set(first.target, tally);
        tally.add(first, other);
    }
    return {models, errors, agreement: Object.fromEntries([...agreement].map(([name, tally]) => [name, tally.agreement()]))};
}

/** The lines of a predictions file (verdicts and errors), the first `limit` of them. */
async function* predictionLines(file: string, limit: number): AsyncGenerator<EvalLine & {error?: string}> {
    let count = 0;
    for await (const raw of readLines(file, Number.MAX_SAFE_INTEGER)) {
        if (count >= limit)
            return;
        const line = parseOutputLine(raw.bytes?.toString("utf8") ?? "");
        if (typeof line === "string")
            continue; // a torn last line (a run killed while writing it): the next run redoes it
        count++;
        yield line as unknown as EvalLine & {error?: string};
    }
}

/** Agreement of two models, and a sample of their disagreements that is the same on every run (the lines of smallest hash). */
class AgreementTally {
    private records = 0;
    private sameLevel = 0;
    private readonly decisions = [[0, 0], [0, 0]];
    private readonly sample: Array<{hash: number, record: Agreement["sample"][number]}> = [];

    constructor(private readonly sampleSize: number) {}

    add(first: EvalLine, second: EvalLine): void {
        this.records++;
        if (first.level === second.level)
            this.sameLevel++;
        const unsafe = (line: EvalLine) => line.level !== "Safe";
        this.decisions[unsafe(first) ? 1 : 0][unsafe(second) ? 1 : 0]++;
        if (unsafe(first) === unsafe(second) || this.sampleSize === 0)
            return;
        const hash = createHash("sha1").update(String(first.line)).digest().readUInt32BE(0);
        if (this.sample.length >= this.sampleSize && hash >= this.sample[this.sample.length - 1].hash)
            return;
        const record = {line: first.line, ...(first.id != null ? {id: first.id} : {}), label: first.label,
            verdicts: [first, second].map((line) => ({level: line.level, score: line.score}))};
        let at = this.sample.length;
        while (at > 0 && this.sample[at - 1].hash > hash)
            at--;
        this.sample.splice(at, 0, {hash, record});
        if (this.sample.length > this.sampleSize)
            this.sample.pop();
    }

    agreement(): Agreement {
        const [[bothSafe, secondOnly], [firstOnly, bothUnsafe]] = this.decisions;
        const n = this.records;
        const same = bothSafe + bothUnsafe;
        // Cohen's kappa: agreement beyond what the two models' rates of "unsafe" would give by chance
        const chance = n > 0 ? ((bothSafe + secondOnly) * (bothSafe + firstOnly) + (firstOnly + bothUnsafe) * (secondOnly + bothUnsafe)) / (n * n) : 0;
        return {records: n, sameLevel: this.sameLevel, sameDecision: same, kappa: n > 0 && chance < 1 ? (same / n - chance) / (1 - chance) : null,
            disagreements: n - same, sample: this.sample.sort((a, b) => a.record.line - b.record.line).map((item) => item.record)};
    }
}

/** The text shown for a record: its last user message, and the answer after it. */
function recordText(messages: Message[]): {prompt: string, response?: string} {
    const lastUser = messages.map((message) => message.role).lastIndexOf("user");
    const cut = (text: string) => text.length > TEXT_LIMIT ? `${text.slice(0, TEXT_LIMIT)}…` : text;
    const response = messages[messages.length - 1].role === "assistant" && messages.length - 1 > lastUser ? messages[messages.length - 1].content : null;
    return {prompt: cut(messages[Math.max(0, lastUser)].content), ...(response != null ? {response: cut(response)} : {})};
}

/** The predictions file's name part for a policy: none for the default, strict. */
function policySuffix(policy: GenPolicyOption): string {
    if (policy === "strict")
        return "";
    return typeof policy === "string" ? `.${policy}` : `.p${policy.minProb}${policy.controversial === false ? "-unsafe-only" : ""}`;
}

function definedOf<T extends object>(object: T): Partial<T> {
    return Object.fromEntries(Object.entries(object).filter(([, value]) => value != null)) as Partial<T>;
}
