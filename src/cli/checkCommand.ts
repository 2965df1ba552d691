import {existsSync, readFileSync} from "node:fs";
import type {Command} from "commander";
import {GenGuard, StreamGuard, readGuardVariant, resolveGenPolicy, validateMessages} from "../index.js";
import type {GenMode, GenPolicyOption, GenVerdict, Message, RiskLevel, StreamModerationReport} from "../index.js";
import {UsageError} from "./UsageError.js";
import {paint} from "./paint.js";

interface CheckCommandOptions {
    model: string,
    head?: string,
    role?: string,
    prompt?: string,
    promptFile?: string,
    format: string,
    policy: string,
    mode?: string,
    json?: boolean,
    threads?: string,
    contextSize?: string,
    parallel?: string
}

/** One conversation to judge, and where it came from (`file`, `file:line`, `<stdin>`). */
interface CheckItem {
    source: string,
    messages: Message[]
}

/** The result of one item, the same for Gen and Stream models (the `--json` line). */
interface CheckResult {
    source: string,
    model: "gen" | "stream",
    target: "prompt" | "response",
    level: RiskLevel,
    category: string | null,
    probs: Record<RiskLevel, number>,
    flagged: boolean,
    categories?: string[],
    categoryProbs?: Record<string, number>,
    refusal?: "Yes" | "No",
    refusalProbs?: {Yes: number, No: number},
    /** Stream, response: the token whose probabilities `probs` are (where monitoring stops, else the least safe token). */
    probsToken?: number,
    /** Stream, response: where live monitoring would have stopped the response. */
    stoppedAt?: {token: number, offset: number} | null,
    /** Gen, generate mode: the model's answer. */
    text?: string
}

const formats = ["text", "jsonl", "chat"] as const;

/** `qwenguard check`: judges prompts and responses from files or stdin with a Gen or a Stream model. */
export function registerCheckCommand(program: Command, setExitCode: (code: number) => void): void {
    program.command("check")
        .description("judge prompts or responses from files (or stdin): one verdict per item; exit 1 when one is flagged")
        .argument("[files...]", "input files; none or - reads stdin")
        .requiredOption("-m, --model <file>", "a Qwen3Guard-Gen GGUF, or a Qwen3Guard-Stream backbone GGUF (detected from the file)")
        .option("--head <file>", "Stream: the head GGUF (default: the one the backbone names, beside it)")
        .option("--role <role>", "text input: prompt (judge the text as a user prompt) or response (judge it as the answer to --prompt); " +
            "default: response when --prompt or --prompt-file is given, else prompt")
        .option("-p, --prompt <text>", "text input: the user prompt the responses answer")
        .option("--prompt-file <file>", "text input: read that user prompt from a file")
        .option("--format <format>", "text: each input is one item; jsonl: one item per line, {\"prompt\", \"response\"?} or {\"messages\"}; " +
            "chat: each input is one conversation, [messages] or {\"messages\"}", "text")
        .option("--policy <policy>", "strict (Controversial flags), loose (it does not), or a number: flag when P(Unsafe) + P(Controversial) reaches it", "strict")
        .option("--mode <mode>", "Gen: score (probabilities, one forward pass; the default) or generate (greedy answer, parsed)")
        .option("--json", "write one JSON object per item instead of a line of text")
        .option("-t, --threads <n>", "CPU threads")
        .option("--context-size <n>", "Gen: tokens per request, template and answer included")
        .option("--parallel <n>", "Gen: requests judged at once, in parallel sequences (each holds --context-size tokens)", "1")
        .action(async (files: string[], options: CheckCommandOptions) => setExitCode(await runCheck(files, options)));
}

async function runCheck(files: string[], options: CheckCommandOptions): Promise<number> {
    if (!(formats as readonly string[]).includes(options.format))
        throw new UsageError(`Expected text, jsonl or chat for --format but received ${JSON.stringify(options.format)}`);
    if (options.mode != null && options.mode !== "score" && options.mode !== "generate")
        throw new UsageError(`Expected score or generate for --mode but received ${JSON.stringify(options.mode)}`);
    const policy = parsePolicy(options.policy);
    const numbers = {threads: integerFlag("--threads", options.threads), contextSize: integerFlag("--context-size", options.contextSize),
        parallel: integerFlag("--parallel", options.parallel)};
    const items = readItems(files.length === 0 ? ["-"] : files, options);

    if (!existsSync(options.model))
        throw new UsageError(`Model file ${options.model} does not exist`);
    const variant = await readGuardVariant(options.model);
    if (variant === "stream-head")
        throw new UsageError(`${options.model} is a Stream head file: pass the Stream backbone GGUF as --model`);
    const isStream = variant === "stream-backbone";
    const given: Array<[string, unknown]> = isStream ? [["--mode", options.mode], ["--context-size", options.contextSize]] : [["--head", options.head]];
    const misplaced = given.filter(([, value]) => value != null).map(([flag]) => flag);
    if (misplaced.length > 0)
        throw new UsageError(`${misplaced.join(" and ")} ${misplaced.length > 1 ? "apply" : "applies"} to ${isStream ? "Gen" : "Stream"} models only`);
    const judge = isStream
        ? await streamJudge(options, policy, numbers.threads)
        : await genJudge(options, policy, numbers, (options.mode ?? "score") as GenMode);

    let flagged = false;
    try {
        await judgeInOrder(items, judge.run, judge.concurrency, (result) => {
            flagged ||= result.flagged;
            process.stdout.write(options.json ? JSON.stringify(result) + "\n" : describe(result) + "\n");
        });
    } finally {
        await judge.dispose();
    }
    return flagged ? 1 : 0;
}

interface Judge {
    run: (item: CheckItem) => Promise<CheckResult>,
    concurrency: number,
    dispose: () => Promise<void>
}

async function genJudge(options: CheckCommandOptions, policy: GenPolicyOption,
    numbers: {threads?: number, contextSize?: number, parallel?: number}, mode: GenMode): Promise<Judge> {
    const parallel = numbers.parallel ?? 1;
    const gen = await GenGuard.load({model: options.model, threads: numbers.threads, contextSize: numbers.contextSize, parallel,
        onWarning: (message) => process.stderr.write(`qwenguard: warning: ${message}\n`)});
    return {
        run: async ({source, messages}) => genResult(source, await gen.moderate(messages, {mode, policy})),
        concurrency: 2 * parallel,
        dispose: () => gen.dispose()
    };
}

function genResult(source: string, verdict: GenVerdict): CheckResult {
    const {target, level, category, categories, refusal, probs, categoryProbs, refusalProbs, flagged, text} = verdict;
    return {source, model: "gen", target, level, category, probs, flagged, categories, categoryProbs,
        ...(refusal != null ? {refusal, refusalProbs} : {}), ...(text != null ? {text} : {})};
}

async function streamJudge(options: CheckCommandOptions, policy: GenPolicyOption, threads: number | undefined): Promise<Judge> {
    const guard = await StreamGuard.load({model: options.model, head: options.head, threads});
    const {minProb, controversial} = resolveGenPolicy(policy);
    // a prompt verdict is one position of the query head: flagged as a Gen verdict would be
    const promptFlagged = (level: RiskLevel, probs: Record<RiskLevel, number>) => minProb != null
        ? probs.Unsafe + (controversial ? probs.Controversial : 0) >= minProb
        : level === "Unsafe" || (controversial && level === "Controversial");
    return {
        run: async ({source, messages}) => streamResult(source, messages, await guard.moderate(messages, {policy}), promptFlagged),
        concurrency: 1,
        dispose: () => guard.dispose()
    };
}

function streamResult(source: string, messages: Message[], report: StreamModerationReport,
    flags: (level: RiskLevel, probs: Record<RiskLevel, number>) => boolean): CheckResult {
    const judgesResponse = messages[messages.length - 1].role === "assistant";
    if (judgesResponse && report.response != null) {
        const {level, category, flag, flagged, tokens} = report.response;
        // the response's probabilities: those of the token where monitoring stops, else of the most unsafe token
        const decisive = flag != null ? tokens[flag.index] : tokens.reduce((worst, token) => token.probs.Safe < worst.probs.Safe ? token : worst, tokens[0]);
        return {source, model: "stream", target: "response", level, category, probs: decisive?.probs ?? {Safe: 1, Unsafe: 0, Controversial: 0},
            ...(decisive != null ? {probsToken: decisive.index} : {}), flagged,
            stoppedAt: flag != null ? {token: flag.index, offset: flag.textOffset} : null};
    }
    const {level, category, probs, categoryProbs} = report.prompt!; // every item has a user message (readItems)
    return {source, model: "stream", target: "prompt", level, category, probs, flagged: flags(level, probs), categoryProbs};
}

/** Runs up to `concurrency` items at once and reports the results in input order. */
async function judgeInOrder(items: readonly CheckItem[], run: (item: CheckItem) => Promise<CheckResult>, concurrency: number,
    report: (result: CheckResult) => void): Promise<void> {
    const pending: Promise<CheckResult>[] = [];
    let next = 0;
    const start = () => {
        if (next >= items.length)
            return;
        const result = run(items[next++]);
        result.catch(() => {}); // awaited in order below; one that fails while an earlier one is awaited must not go unhandled
        pending.push(result);
    };
    while (pending.length < concurrency && next < items.length)
        start();
    while (pending.length > 0) {
        const result = await pending.shift()!;
        report(result);
        start();
    }
}

/** One line of text: where from, the coloured verdict, the category, P(Unsafe), and the flag. */
function describe(result: CheckResult): string {
    const style = result.level === "Unsafe" ? "red" : result.level === "Controversial" ? "yellow" : "green";
    const parts = [
        result.source,
        paint(style, result.level, process.stdout),
        result.category ?? "-",
        `P(Unsafe)=${result.probs.Unsafe.toFixed(3)}${result.probsToken != null ? ` at token ${result.probsToken}` : ""}`
    ];
    if (result.refusal != null)
        parts.push(`refusal=${result.refusal}`);
    if (result.stoppedAt != null)
        parts.push(`stopped at token ${result.stoppedAt.token} (character ${result.stoppedAt.offset})`);
    parts.push(result.flagged ? paint("bold", "FLAGGED", process.stdout) : "ok");
    return parts.join("  ");
}

function readItems(files: readonly string[], options: CheckCommandOptions): CheckItem[] {
    const textOnly = options.role != null || options.prompt != null || options.promptFile != null;
    if (options.format !== "text" && textOnly)
        throw new UsageError(`--role, --prompt and --prompt-file apply to --format text; a ${options.format} input names its own roles`);
    if (options.prompt != null && options.promptFile != null)
        throw new UsageError("Pass either --prompt or --prompt-file, not both");
    if (options.role != null && options.role !== "prompt" && options.role !== "response")
        throw new UsageError(`Expected prompt or response for --role but received ${JSON.stringify(options.role)}`);
    const prompt = options.promptFile != null ? readInput(options.promptFile) : options.prompt;
    const role = options.role ?? (prompt != null ? "response" : "prompt");
    if (role === "prompt" && prompt != null)
        throw new UsageError("--prompt and --prompt-file give the prompt a response answers: use them with --role response");
    if (files.filter((file) => file === "-").length > 1)
        throw new UsageError("stdin (-) can be read only once");

    return files.flatMap((file): CheckItem[] => {
        const source = file === "-" ? "<stdin>" : file;
        const content = readInput(file);
        if (options.format === "text") {
            const messages: Message[] = role === "prompt"
                ? [{role: "user", content}]
                : [{role: "user", content: prompt ?? ""}, {role: "assistant", content}];
            return [{source, messages}];
        }
        if (options.format === "chat")
            return [{source, messages: conversation(parseJson(content, source), source)}];
        return content.split("\n").flatMap((line, index) => {
            if (line.trim().length === 0)
                return [];
            const at = `${source}:${index + 1}`;
            return [{source: at, messages: conversation(parseJson(line, at), at)}];
        });
    });
}

/** A conversation from JSON: `[messages]`, `{"messages": [...]}`, or `{"prompt": ..., "response"?: ...}`. */
function conversation(value: unknown, at: string): Message[] {
    const messages = messagesOf(value, at);
    if (!messages.some((message) => message.role === "user"))
        throw new UsageError(`${at}: the conversation has no user message`);
    return messages;
}

function messagesOf(value: unknown, at: string): Message[] {
    try {
        if (Array.isArray(value))
            return validateMessages(value);
        if (value != null && typeof value === "object") {
            const object = value as Record<string, unknown>;
            if ("messages" in object)
                return validateMessages(object.messages);
            if (typeof object.prompt === "string" && (object.response === undefined || typeof object.response === "string"))
                return object.response === undefined
                    ? [{role: "user", content: object.prompt}]
                    : [{role: "user", content: object.prompt}, {role: "assistant", content: object.response as string}];
        }
    } catch (error) {
        throw new UsageError(`${at}: ${(error as Error).message}`);
    }
    throw new UsageError(`${at}: expected {"prompt": string, "response"?: string}, {"messages": [...]} or [messages]`);
}

function parseJson(text: string, at: string): unknown {
    try {
        return JSON.parse(text);
    } catch (error) {
        throw new UsageError(`${at}: invalid JSON (${(error as Error).message})`);
    }
}

function readInput(file: string): string {
    try {
        return readFileSync(file === "-" ? 0 : file, "utf8");
    } catch (error) {
        throw new UsageError(`Cannot read ${file === "-" ? "stdin" : file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
}

function parsePolicy(policy: string): GenPolicyOption {
    if (policy === "strict" || policy === "loose")
        return policy;
    const minProb = Number(policy);
    if (policy.trim() === "" || !(minProb > 0 && minProb <= 1))
        throw new UsageError(`Expected strict, loose or a number in (0, 1] for --policy but received ${JSON.stringify(policy)}`);
    return {minProb};
}

function integerFlag(flag: string, value: string | undefined): number | undefined {
    if (value == null)
        return undefined;
    const number = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(number))
        throw new UsageError(`Expected a positive integer for ${flag} but received ${JSON.stringify(value)}`);
    return number;
}
