import {readFileSync} from "node:fs";
import type {Command} from "commander";
import {ContextLimitError} from "../conversation/ContextLimitError.js";
import {StreamGuard} from "../stream/StreamGuard.js";
import {resolvePolicy} from "../stream/DecisionRule.js";
import type {Message} from "../conversation/messages.js";
import type {PolicyOption, TokenVerdict, Verdict} from "../stream/types.js";
import {countsAsUnsafe} from "../stream/DecisionRule.js";
import {JudgedText} from "../stream/monitor.js";
import {UsageError} from "./UsageError.js";
import {integerFlag} from "./flags.js";
import {colorEnabled, paint} from "./paint.js";
import {resolveModelFlag} from "./pullReporter.js";

interface StreamCommandOptions {
    model: string,
    head?: string,
    prompt?: string,
    promptFile?: string,
    system?: string,
    onUnsafe: "stop" | "mark" | "continue",
    policy: "strict" | "loose",
    json?: boolean,
    tokens?: boolean,
    thinking?: boolean,
    threads?: string
}

/** `qwenguard stream`: guards a live response read from stdin. */
export function registerStreamCommand(program: Command, setExitCode: (code: number) => void): void {
    program.command("stream")
        .description("guard a live response on stdin: echo it as it is judged, stop it the moment it turns unsafe")
        .option("-m, --model <model>", "a Stream model name (stream-0.6b, stream-4b:q4_k_m, hf:OWNER/REPO: pulled into the cache on first use) " +
            "or a Qwen3Guard-Stream backbone GGUF (from `qwenguard convert`)", "stream-0.6b")
        .option("--head <file>", "its head GGUF (default: the one the backbone names, beside it)")
        .option("-p, --prompt <text>", "the user prompt the response answers")
        .option("--prompt-file <file>", "read the user prompt from a file")
        .option("--system <text>", "a system message before the prompt")
        .option("--on-unsafe <action>", "stop: end the echo at the unsafe span (exit 1); mark: highlight it and go on; continue: only report", "stop")
        .option("--policy <policy>", "strict (Controversial counts as unsafe) or loose", "strict")
        .option("--json", "write one JSON event per line instead of echoing the text")
        .option("--tokens", "with --json, also write every token's verdict")
        .option("--thinking", "the response carries its own <think>…</think> reasoning, which is scored too")
        .option("-t, --threads <n>", "CPU threads")
        .action(async (options: StreamCommandOptions) => setExitCode(await runStream(options)));
}

async function runStream(options: StreamCommandOptions): Promise<number> {
    if (!["stop", "mark", "continue"].includes(options.onUnsafe))
        throw new UsageError(`Expected stop, mark or continue for --on-unsafe but received ${JSON.stringify(options.onUnsafe)}`);
    if (options.prompt != null && options.promptFile != null)
        throw new UsageError("Pass either --prompt or --prompt-file, not both");
    const policyOption = options.policy as PolicyOption;
    try {
        resolvePolicy(policyOption);
    } catch (error) {
        throw new UsageError((error as Error).message.replace('"policy"', "--policy"));
    }
    const prompt = options.promptFile != null ? readPromptFile(options.promptFile) : options.prompt ?? "";
    const messages: Message[] = [...(options.system != null ? [{role: "system" as const, content: options.system}] : []), {role: "user", content: prompt}];
    const threads = integerFlag("--threads", options.threads);

    // one session: the whole KV budget is its own
    const guard = await StreamGuard.load({model: await resolveModelFlag(options.model), head: options.head, threads, maxSessions: 1});
    const out = (text: string) => void process.stdout.write(text);
    const event = (value: object) => out(JSON.stringify(value) + "\n");
    try {
        const session = await guard.createSession({messages, policy: policyOption, thinking: options.thinking ?? false});
        const promptFlagged = resolvePolicy(policyOption).controversial ? session.promptVerdict.level !== "Safe" : session.promptVerdict.level === "Unsafe";
        if (options.json)
            event({type: "prompt", ...verdictJson(session.promptVerdict), flagged: promptFlagged});

        const judged = new JudgedText(session);
        let echoed = 0;
        let marking = false;
        const echo = (all: boolean) => {
            if (options.json)
                return;
            if (options.onUnsafe === "stop")
                return out(judged.take(all));
            // mark / continue: everything is echoed, a run that may still fire waits until it is decided
            const tokens = session.tokens;
            const end = session.flag != null || all ? tokens.length : tokens.length - session.pendingUnsafeTokens;
            let text = "";
            for (const token of tokens.slice(echoed, end)) {
                const flagged = options.onUnsafe === "mark" && session.flag != null && token.index >= session.flag.startIndex &&
                    countsAsUnsafe(token, session.policy);
                if (flagged !== marking)
                    text += flagged ? markStart() : markEnd();
                marking = flagged;
                text += token.text;
            }
            out(text);
            echoed = Math.max(echoed, end);
        };
        const report = (verdicts: TokenVerdict[]) => {
            if (options.json && options.tokens)
                for (const verdict of verdicts.filter((v) => options.onUnsafe !== "stop" || session.flag == null || v.index <= session.flag.index))
                    event({type: "token", index: verdict.index, token: verdict.token, text: verdict.text, ...verdictJson(verdict)});
        };

        let flagReported = false;
        let reported = 0;
        const reportNew = () => {
            const tokens = session.tokens;
            report(tokens.slice(reported));
            reported = tokens.length;
            if (session.flag != null && !flagReported) {
                flagReported = true;
                if (options.json)
                    event({type: "flag", ...session.flag});
            }
        };
        // Input over the session's limit: what fitted is judged (a flag there still counts), the rest is refused.
        let overflow: ContextLimitError | null = null;
        const pushing = async (push: () => Promise<unknown>) => {
            try {
                await push();
            } catch (error) {
                if (!(error instanceof ContextLimitError))
                    throw error;
                overflow = error;
            }
            reportNew();
        };
        process.stdin.setEncoding("utf8");
        for await (const chunk of process.stdin as AsyncIterable<string>) {
            await pushing(() => session.pushText(chunk));
            if ((session.flag != null && options.onUnsafe === "stop") || overflow != null)
                break;
            echo(false);
        }
        if (overflow == null && (session.flag == null || options.onUnsafe !== "stop"))
            await pushing(() => session.finish());
        echo(session.flag == null);
        if (marking)
            out(markEnd());
        const overflowed = overflow as ContextLimitError | null;
        if (overflowed != null && session.flag == null) {
            await session.dispose();
            throw new UsageError(`${overflowed.message}; nothing in the judged part was flagged`);
        }
        if (overflowed != null)
            process.stderr.write(`\nqwenguard: warning: ${overflowed.message}\n`);

        const summary = session.report();
        const flagged = summary.flagged || promptFlagged;
        if (options.json) {
            // in stop mode the response ends at the flagged token, whatever arrived after it in the same chunk
            const tokens = options.onUnsafe === "stop" && summary.flag != null ? summary.flag.index + 1 : summary.tokens.length;
            event({type: "summary", level: summary.level, category: summary.category, flagged, flag: summary.flag,
                prompt: session.promptVerdict.level, tokens});
        } else {
            const verdict = summary.flag != null
                ? `${summary.flag.level}${summary.flag.category != null ? ` (${summary.flag.category})` : ""} at token ${summary.flag.index}` +
                  (options.onUnsafe === "stop" ? ", response stopped" : "")
                : `${summary.level}`;
            process.stderr.write(`\n${paint(flagged ? "red" : "green", `qwenguard: response ${verdict}; prompt ${session.promptVerdict.level}`)}\n`);
        }
        await session.dispose();
        return flagged ? 1 : 0;
    } finally {
        await guard.dispose();
    }
}

/** Unsafe text is shown in inverse video on a colour terminal, else between ⟦ ⟧. */
function markStart(): string {
    return colorEnabled(process.stdout) ? "\u001b[7m" : "⟦";
}

function markEnd(): string {
    return colorEnabled(process.stdout) ? "\u001b[27m" : "⟧";
}

function verdictJson(verdict: Verdict) {
    return {level: verdict.level, category: verdict.category, probs: verdict.probs, categoryProbs: verdict.categoryProbs};
}

function readPromptFile(file: string): string {
    try {
        return readFileSync(file, "utf8");
    } catch (error) {
        throw new UsageError(`Cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
}
