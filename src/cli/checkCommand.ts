import {readFileSync} from "node:fs";
import type {Command} from "commander";
import {Judge} from "../moderation/Judge.js";
import {conversationOf} from "../moderation/conversationOf.js";
import {readGuardVariant} from "../gen/readGuardVariant.js";
import type {JudgeResult} from "../moderation/Judge.js";
import type {Message} from "../conversation/messages.js";
import {judgeItem} from "../batch/moderateMany.js";
import {firstInvalidUtf8} from "../batch/readRecords.js";
import {mapInOrder} from "../moderation/mapInOrder.js";
import {UsageError} from "./UsageError.js";
import {integerFlag, parseMode, parsePolicy} from "./flags.js";
import {paint} from "./paint.js";
import {resolveModelFlag} from "./pullReporter.js";

interface CheckCommandOptions {
    model: string,
    head?: string,
    role?: string,
    prompt?: string,
    promptFile?: string,
    format: string,
    policy: string,
    mode?: string,
    windows?: boolean,
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

/** The result of one item (the `--json` line): where it came from, and the verdict. */
type CheckResult = {source: string} & JudgeResult;
type CheckError = {source: string, error: string};

const formats = ["text", "jsonl", "chat"] as const;

/** `qwenguard check`: judges prompts and responses from files or stdin with a Gen or a Stream model. */
export function registerCheckCommand(program: Command, setExitCode: (code: number) => void): void {
    program.command("check")
        .description("judge prompts or responses from files (or stdin): one verdict per item; exit 1 when one is flagged")
        .argument("[files...]", "input files; none or - reads stdin")
        .option("-m, --model <model>", "a model name (gen-0.6b, stream-0.6b, gen-4b:q4_k_m, hf:OWNER/REPO…: pulled into the cache on first use) " +
            "or a file: a Qwen3Guard-Gen GGUF or a Qwen3Guard-Stream backbone GGUF (detected from the file)", "gen-0.6b")
        .option("--head <file>", "Stream: the head GGUF (default: the one the backbone names, beside it)")
        .option("--role <role>", "text input: prompt (judge the text as a user prompt) or response (judge it as the answer to --prompt); " +
            "default: response when --prompt or --prompt-file is given, else prompt")
        .option("-p, --prompt <text>", "text input: the user prompt the responses answer")
        .option("--prompt-file <file>", "text input: read that user prompt from a file")
        .option("--format <format>", "text: each input is one item; jsonl: one item per line, {\"prompt\", \"response\"?} or {\"messages\"}; " +
            "chat: each input is one conversation, [messages] or {\"messages\"}", "text")
        .option("--policy <policy>", "strict (Controversial flags), loose (it does not), or a number: flag when P(Unsafe) + P(Controversial) reaches it", "strict")
        .option("--mode <mode>", "Gen: score (probabilities, one forward pass; the default) or generate (greedy answer, parsed)")
        .option("--windows", "Gen: judge a message over the context in overlapping windows (the worst wins) instead of failing")
        .option("--json", "write one JSON object per item instead of a line of text")
        .option("-t, --threads <n>", "CPU threads")
        .option("--context-size <n>", "Gen: tokens per request, template and answer included; also the KV budget of all requests together")
        .option("--parallel <n>", "Gen: requests judged at once per target, their steps decoded together (one KV budget of --context-size)", "1")
        .action(async (files: string[], options: CheckCommandOptions) => setExitCode(await runCheck(files, options)));
}

async function runCheck(files: string[], options: CheckCommandOptions): Promise<number> {
    if (!(formats as readonly string[]).includes(options.format))
        throw new UsageError(`Expected text, jsonl or chat for --format but received ${JSON.stringify(options.format)}`);
    const mode = parseMode(options.mode);
    const policy = parsePolicy(options.policy);
    const numbers = {threads: integerFlag("--threads", options.threads), contextSize: integerFlag("--context-size", options.contextSize),
        parallel: integerFlag("--parallel", options.parallel)};
    const items = readItems(files.length === 0 ? ["-"] : files, options);

    options.model = await resolveModelFlag(options.model);
    const variant = await readGuardVariant(options.model);
    if (variant === "stream-head")
        throw new UsageError(`${options.model} is a Stream head file: pass the Stream backbone GGUF as --model`);
    const isStream = variant === "stream-backbone";
    const given: Array<[string, unknown]> = isStream ? [["--mode", options.mode], ["--context-size", options.contextSize], ["--windows", options.windows]]
        : [["--head", options.head]];
    const misplaced = given.filter(([, value]) => value != null).map(([flag]) => flag);
    if (misplaced.length > 0)
        throw new UsageError(`${misplaced.join(" and ")} ${misplaced.length > 1 ? "apply" : "applies"} to ${isStream ? "Gen" : "Stream"} models only`);
    const judge = await Judge.open({model: options.model, head: options.head, policy, mode, threads: numbers.threads,
        ...(options.windows === true ? {longInput: "windows" as const} : {}),
        contextSize: numbers.contextSize, concurrency: numbers.parallel ?? 1,
        ...(isStream ? {} : {onWarning: (message: string) => void process.stderr.write(`qwenguard: warning: ${message}\n`)})});

    // An item that cannot be judged (over the context, a conversation of the wrong shape) is reported with where it came
    // from, and the others are still judged; the exit code then says 2, since not everything was judged.
    let flagged = false;
    let errors = 0;
    try {
        for await (const result of mapInOrder(items, judge.inFlight, async ({source, messages}): Promise<CheckResult | CheckError> => {
            const {result: judged, error} = await judgeItem(judge, () => messages);
            return error != null ? {source, error} : {source, ...judged!};
        })) {
            if ("error" in result) {
                errors++;
                if (options.json)
                    process.stdout.write(JSON.stringify(result) + "\n");
                process.stderr.write(`qwenguard: ${result.source}: ${result.error}\n`);
                continue;
            }
            flagged ||= result.flagged;
            process.stdout.write(options.json ? JSON.stringify(result) + "\n" : describe(result) + "\n");
        }
    } finally {
        await judge.dispose();
    }
    return errors > 0 ? 2 : flagged ? 1 : 0;
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
            if (content.trim().length === 0)
                throw new UsageError(`${source} is empty: nothing to judge`);
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

/** A conversation from JSON (see {@link conversationOf}), or a usage error naming where it came from. */
function conversation(value: unknown, at: string): Message[] {
    try {
        return conversationOf(value);
    } catch (error) {
        throw new UsageError(`${at}: ${(error as Error).message}`);
    }
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
        const bytes = readFileSync(file === "-" ? 0 : file);
        try {
            // a UTF-8 byte order mark is not text (TextDecoder drops it); invalid UTF-8 is refused, not replaced
            return new TextDecoder("utf-8", {fatal: true}).decode(bytes);
        } catch {
            throw new UsageError(`${file === "-" ? "stdin" : file} is not valid UTF-8 (at byte ${firstInvalidUtf8(bytes)})`);
        }
    } catch (error) {
        if (error instanceof UsageError)
            throw error;
        throw new UsageError(`Cannot read ${file === "-" ? "stdin" : file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
}
