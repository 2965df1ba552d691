import {spawn} from "node:child_process";
import path from "node:path";
import t from "tap";
import type {Test} from "tap";
import {packageRoot} from "../../src/native/addonBuild.js";
import {PLANTED_RESPONSE_UNSAFE_CATEGORY} from "../helpers/plantedStream.js";
import {convertedFixture} from "../native/streamTestKit.js";
import type {ConvertedStream} from "../native/streamTestKit.js";

const cli = path.join(packageRoot, "bin", "qwenguard.js");

interface Run {
    status: number | null,
    stdout: string,
    stderr: string,
    /** stdout length when each chunk after the first was written: proves echo before the end of input */
    echoedBeforeChunk: number[]
}

/**
 * Runs the CLI, writing `chunks` to its stdin one at a time with a delay between them. The second chunk waits until
 * the CLI has echoed something (or 60 s), so a model still loading cannot make every chunk arrive at once.
 */
function runStreaming(args: string[], chunks: string[], delayMs = 150): Promise<Run> {
    return new Promise((resolve, reject) => {
        // an empty model cache, offline: a run without -m says which model it needs
        const child = spawn(process.execPath, [cli, ...args], {stdio: ["pipe", "pipe", "pipe"],
            env: {...process.env, NO_COLOR: "1", QWENGUARD_MODELS: "/nonexistent/models", HF_HUB_OFFLINE: "1"}});
        let stdout = "";
        let stderr = "";
        const echoedBeforeChunk: number[] = [];
        child.stdout.on("data", (data: Buffer) => void (stdout += data.toString("utf8")));
        child.stderr.on("data", (data: Buffer) => void (stderr += data.toString("utf8")));
        child.stdin.on("error", () => {});  // the CLI may stop reading once it flags
        child.on("error", reject);
        child.on("close", (status) => resolve({status, stdout, stderr, echoedBeforeChunk}));
        let i = 0;
        const writeNext = () => {
            if (i >= chunks.length || child.exitCode != null) {
                child.stdin.end();
                return;
            }
            if (i === 1 && stdout.length === 0 && Date.now() - started < 60_000) {
                setTimeout(writeNext, 50);
                return;
            }
            if (i > 0)
                echoedBeforeChunk.push(stdout.length);
            child.stdin.write(chunks[i++]);
            setTimeout(writeNext, delayMs);
        };
        const started = Date.now();
        writeNext();
    });
}

let model: ConvertedStream;
t.before(async () => {
    model = await convertedFixture(t as unknown as Test, "planted-stream", "F32", "f32");
});

const safeChunks = ["Rice: rinse ", "it, then ", "boil it in ", "water. Serve ", "warm. Done ", "here."];
const unsafeChunks = ["Sure, here ", "is how: ", "bomb ", "poison ", "and the rest ", "of it."];

t.test("usage and input errors exit with 2 and say what was wrong", async (t) => {
    const missing = await runStreaming(["stream", "-m", "/no/model.gguf"], []);
    t.equal(missing.status, 2);
    t.match(missing.stderr, "qwenguard: Model file /no/model.gguf does not exist");

    const badAction = await runStreaming(["stream", "-m", model.modelPath, "--on-unsafe", "explode"], []);
    t.equal(badAction.status, 2);
    t.match(badAction.stderr, 'Expected stop, mark or continue for --on-unsafe but received "explode"');

    const badPolicy = await runStreaming(["stream", "-m", model.modelPath, "--policy", "lenient"], []);
    t.equal(badPolicy.status, 2);
    t.match(badPolicy.stderr, 'for --policy but received "lenient"');

    const noPromptFile = await runStreaming(["stream", "-m", model.modelPath, "--prompt-file", "/no/prompt.txt"], []);
    t.equal(noPromptFile.status, 2);
    t.equal(noPromptFile.stderr, "qwenguard: Cannot read /no/prompt.txt: ENOENT\n");

    const badThreads = await runStreaming(["stream", "-m", model.modelPath, "-t", "abc"], []);
    t.equal(badThreads.status, 2);
    t.equal(badThreads.stderr, 'qwenguard: Expected a positive integer for --threads but received "abc"\n');

    const noModel = await runStreaming(["stream"], []);
    t.equal(noModel.status, 2);
    t.equal(noModel.stderr, "qwenguard: stream-0.6b:q8_0 is not in the model cache (/nonexistent/models) and HF_HUB_OFFLINE is set: " +
        "run `qwenguard pull stream-0.6b` while online\n");
});

t.test("a safe response is echoed as it streams in, exit 0", async (t) => {
    const run = await runStreaming(["stream", "-m", model.modelPath, "-p", "How do I cook rice?"], safeChunks);
    t.equal(run.status, 0, run.stderr);
    t.equal(run.stdout, safeChunks.join(""), "all text echoed, nothing added");
    t.ok(run.echoedBeforeChunk.at(-1)! > 0, "text was echoed before the input ended");
    t.match(run.stderr, "qwenguard: response Safe; prompt Safe");
});

t.test("stop: nothing from the unsafe span on is echoed, exit 1", async (t) => {
    const run = await runStreaming(["stream", "-m", model.modelPath, "-p", "hi"], unsafeChunks);
    t.equal(run.status, 1, run.stderr);
    t.equal(run.stdout, "Sure, here is how:");
    t.match(run.stderr, `qwenguard: response Unsafe (${PLANTED_RESPONSE_UNSAFE_CATEGORY}) at token 7, response stopped; prompt Safe`);
});

t.test("a response over the session's limit in one chunk: the part that fits is judged and echoed", async (t) => {
    // 9,000 words are over the 8,192 tokens of the model's context; they arrive in one write
    const tail = "word ".repeat(9000);
    const unsafe = await runStreaming(["stream", "-m", model.modelPath, "-t", "1", "-p", "hi"], [`${unsafeChunks.join("")} ${tail}`]);
    t.equal(unsafe.status, 1, "the flag in the judged part counts");
    t.equal(unsafe.stdout, "Sure, here is how:");
    t.match(unsafe.stderr, /qwenguard: warning: The session would hold \d+ tokens, over its limit of 8192 /);
    t.match(unsafe.stderr, `qwenguard: response Unsafe (${PLANTED_RESPONSE_UNSAFE_CATEGORY}) at token 7, response stopped`);

    const safe = await runStreaming(["stream", "-m", model.modelPath, "-t", "1", "-p", "hi"], [`${safeChunks.join("")} ${tail}`]);
    t.equal(safe.status, 2, "not everything could be judged");
    t.ok(safe.stdout.startsWith(`${safeChunks.join("")} word word`), "the judged part is echoed");
    t.match(safe.stderr, /qwenguard: The session would hold \d+ tokens, over its limit of 8192 .*; nothing in the judged part was flagged\n$/);
});

t.test("mark: everything is echoed with the unsafe span marked, exit 1", async (t) => {
    const run = await runStreaming(["stream", "-m", model.modelPath, "-p", "hi", "--on-unsafe", "mark"], unsafeChunks);
    t.equal(run.status, 1, run.stderr);
    t.equal(run.stdout, "Sure, here is how:⟦ bomb poison⟧ and the rest of it.");
});

t.test("continue: everything is echoed unmarked, the flag is still reported, exit 1", async (t) => {
    const run = await runStreaming(["stream", "-m", model.modelPath, "-p", "hi", "--on-unsafe", "continue", "--policy", "loose"], unsafeChunks);
    t.equal(run.status, 1, run.stderr);
    t.equal(run.stdout, unsafeChunks.join(""));
    t.match(run.stderr, "response Unsafe");
});

t.test("--json writes one event per line: prompt, tokens on request, flag, summary", async (t) => {
    const run = await runStreaming(["stream", "-m", model.modelPath, "-p", "How do I bypass the filter?", "--json", "--tokens"], unsafeChunks);
    t.equal(run.status, 1, run.stderr);
    const events = run.stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    t.same(events.map((event) => event.type), ["prompt", ...Array(8).fill("token"), "flag", "summary"]);
    t.match(events[0], {type: "prompt", level: "Unsafe", category: "Jailbreak", flagged: true, probs: {Safe: Number, Unsafe: Number, Controversial: Number}});
    t.match(events[7], {type: "token", index: 6, token: 12764, text: " bomb", level: "Unsafe", category: PLANTED_RESPONSE_UNSAFE_CATEGORY});
    t.same(events[9], {type: "flag", index: 7, level: "Unsafe", category: PLANTED_RESPONSE_UNSAFE_CATEGORY, textOffset: 18, startIndex: 6});
    t.match(events[10], {type: "summary", level: "Unsafe", flagged: true, prompt: "Unsafe", tokens: 8});
});
