import t from "tap";
import type {Test} from "tap";
import OpenAI from "openai";
import {RemoteGuard, guardChatStream, streamSessionMonitor} from "../../src/index.js";
import type {AnyGuard, ChatStreamFlag} from "../../src/index.js";
import {contentChunk, startScriptedUpstream, startServer, writeSse} from "../server/serverTestKit.js";
import type {ScriptedUpstream} from "../server/serverTestKit.js";
import {SAFE, SPLIT_UNSAFE, countEvaluations, plantedGuards, waitFor} from "./integrationTestKit.js";

const MESSAGES = [{role: "system" as const, content: "Be helpful."}, {role: "user" as const, content: "Tell me a story."}];
const {stream, gen} = plantedGuards(t);

/** The chunks of an answer as an upstream streams it: a role chunk, one chunk per delta, a finish chunk. */
function answerChunks(deltas: readonly string[]): object[] {
    const role = {...contentChunk(""), choices: [{index: 0, delta: {role: "assistant", content: ""}, logprobs: null, finish_reason: null}]};
    return [role, ...deltas.map((delta) => contentChunk(delta)), contentChunk("", 0, "stop")];
}

/** A scripted upstream that answers every request with these chunks (one per `delayMs`), or as `script` says. */
async function upstreamOf(t: Test, chunks: readonly object[], options: {delayMs?: number, breakAfter?: number, holdOpen?: boolean} = {}): Promise<{upstream: ScriptedUpstream, client: OpenAI}> {
    const upstream = await startScriptedUpstream(t, async (_request, response) => {
        if (options.breakAfter == null)
            return writeSse(response, chunks, {delayMs: options.delayMs ?? 2, holdOpen: options.holdOpen});
        response.writeHead(200, {"content-type": "text/event-stream"});
        for (const chunk of chunks.slice(0, options.breakAfter))
            response.write(`data: ${JSON.stringify(chunk)}\n\n`);
        await new Promise((resolve) => setTimeout(resolve, 20));
        response.socket?.destroy(); // the connection drops mid-answer
    });
    return {upstream, client: new OpenAI({baseURL: upstream.url, apiKey: "upstream-key", maxRetries: 0})};
}

/** Streams a chat completion through guardChatStream; returns the chunks yielded, the text, the flag and any error. */
async function guarded(client: OpenAI, guard: AnyGuard, messages: OpenAI.ChatCompletionMessageParam[] = MESSAGES) {
    const source = await client.chat.completions.create({model: "upstream-model", messages, stream: true});
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    const flags: ChatStreamFlag[] = [];
    let error: unknown = null;
    try {
        for await (const chunk of guardChatStream(source, {guard, messages, onFlag: (flag) => flags.push(flag)}))
            chunks.push(chunk);
    } catch (caught) {
        error = caught;
    }
    const text = chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join("");
    return {chunks, text, flags, error, last: chunks.at(-1) as (OpenAI.ChatCompletionChunk & {qwen3guard?: {response: {level: string}}}) | undefined};
}

t.test("bad options are refused with what was wrong", async (t) => {
    const guard = await stream();
    const none = (async function* () {})();
    const cases: Array<[unknown, RegExp]> = [
        [undefined, /^Expected an options object \{guard, messages, policy\?\} \(or \{openSession\}\) for guardChatStream$/],
        [{messages: MESSAGES}, /^Expected a StreamGuard, a GenGuard or a RemoteGuard for "guard" but received undefined$/],
        [{guard, messages: "hi"}, /^Expected an array of messages for "messages" but received/],
        [{guard, messages: [{role: "system", content: "x"}]}, /^Expected a "user" message in "messages"/],
        [{guard, messages: [{role: "user", content: "x"}, {role: "tool", content: "y"}, {role: "user", content: "z"}, {role: "system", content: "s"}]},
            /^Expected only assistant messages \(a prefill of the answer\) after the last user message, but received system$/]
    ];
    for (const [index, [options, message]] of cases.entries())
        await t.rejects(guardChatStream(none, options as never).next(), {name: "TypeError", message}, `case ${index}`);

    // a delta that is not text is refused, never passed on unjudged
    const {client} = await upstreamOf(t, [contentChunk("Hello"), {...contentChunk(""), choices: [{index: 0, delta: {content: 42}, finish_reason: null}]}]);
    const run = await guarded(client, guard);
    t.match(run.error, {name: "TypeError", message: /^Expected a string or null for "choices\[0\]\.delta\.content" but received number/});
});

t.test("the openai client's stream: a safe answer passes through chunk for chunk", async (t) => {
    const {client} = await upstreamOf(t, answerChunks(SAFE));
    const plain: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of await client.chat.completions.create({model: "upstream-model", messages: MESSAGES, stream: true}))
        plain.push(chunk);
    const run = await guarded(client, await stream());
    t.same(run.chunks, plain, "the same chunk objects, in the same order, nothing merged or added");
    t.equal(run.text, SAFE.join(""));
    t.equal(run.last?.choices[0].finish_reason, "stop");
    t.same(run.flags, []);
});

t.test("an unsafe span split across deltas: the text before it, then a content_filter chunk; the request is aborted", async (t) => {
    const guard = await stream();
    // (held open: still generating when the cut comes, however slowly the guard judges)
    const {upstream, client} = await upstreamOf(t, answerChunks([...SPLIT_UNSAFE, ...SAFE, ...SAFE]).slice(0, -1), {delayMs: 10, holdOpen: true});
    const run = await guarded(client, guard);
    t.equal(run.text, "Sure, here is how:");
    t.equal(run.last?.choices[0].finish_reason, "content_filter");
    t.match(run.last?.qwen3guard, {choice: 0, response: {level: "Unsafe", flagged: true, stoppedAt: {offset: 18}}});
    t.same(run.flags.map((flag) => [flag.choice, flag.verdict.level]), [[0, "Unsafe"]]);
    t.equal(run.error, null);
    await waitFor(() => upstream.aborted === 1);
    t.equal(upstream.aborted, 1, "controller.abort() closed the upstream connection");
    t.equal(guard._context.usedCells(), 0, "the session was freed");
});

t.test("a flag at the very first tokens yields only the role chunk and the content_filter ending", async (t) => {
    const {client} = await upstreamOf(t, answerChunks([" bomb", " poison", " and", " more"]));
    const run = await guarded(client, await stream());
    t.equal(run.text, "");
    t.same(run.chunks.map((chunk) => chunk.choices[0].finish_reason), [null, "content_filter"]);
    t.equal(run.chunks[0].choices[0].delta.role, "assistant");
});

t.test("a prefill (an assistant message after the user's) is judged as the answer's start, and never yielded", async (t) => {
    const {client} = await upstreamOf(t, answerChunks([" bomb", " poison", " now."]));
    const run = await guarded(client, await stream(), [...MESSAGES, {role: "assistant", content: "Sure, here is how:"}]);
    t.equal(run.text, "");
    t.equal(run.last?.choices[0].finish_reason, "content_filter");
});

t.test("an upstream connection dropped mid-answer: the text received is judged to its end and yielded, then the error", async (t) => {
    const guard = await stream();
    const {client} = await upstreamOf(t, answerChunks(SAFE), {breakAfter: 6});
    const run = await guarded(client, guard);
    t.equal(run.text, SAFE.slice(0, 5).join(""), "every delta that arrived, judged");
    t.ok(run.error instanceof Error, `the consumer heard the failure (${String(run.error)})`);
    t.equal(guard._context.usedCells(), 0, "the session was freed");
});

t.test("a consumer that stops reading aborts the request and frees the session", async (t) => {
    const guard = await stream();
    const {upstream, client} = await upstreamOf(t, answerChunks([...SAFE, ...SAFE, ...SAFE]).slice(0, -1), {delayMs: 10, holdOpen: true});
    const source = await client.chat.completions.create({model: "upstream-model", messages: MESSAGES, stream: true});
    let text = "";
    for await (const chunk of guardChatStream(source, {guard, messages: MESSAGES})) {
        text += chunk.choices[0]?.delta?.content ?? "";
        if (text.length > 10)
            break;
    }
    await waitFor(() => upstream.aborted === 1 && guard._context.usedCells() === 0);
    t.equal(upstream.aborted, 1, "the upstream connection was closed");
    t.equal(guard._context.usedCells(), 0, "the session was freed");
});

t.test("chunks that arrived together are judged in one push, and come out the same", async (t) => {
    const guard = await stream();
    const chunks = answerChunks([...SAFE, ...SAFE, ...SAFE, ...SAFE]) as OpenAI.ChatCompletionChunk[];
    const evaluations = countEvaluations(guard);
    t.teardown(() => evaluations.restore());
    const out: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of guardChatStream((async function* () {
        yield* chunks; // all there at once, as when the guard has fallen behind its upstream
    })(), {guard, messages: MESSAGES}))
        out.push(chunk);
    t.same(out, chunks);
    t.ok(evaluations.count <= 8, `${chunks.length} chunks judged in ${evaluations.count} evaluations (the prompt, pushes of 4, 8, 16… chunks, the tail)`);
});

t.test("an answer the guard cannot judge to its end: only what was judged goes out, then the error", async (t) => {
    const guard = await stream();
    const long = Array.from({length: 60}, (_, i) => ` word${i}`);
    const {client} = await upstreamOf(t, answerChunks(long), {delayMs: 0});
    const source = await client.chat.completions.create({model: "upstream-model", messages: MESSAGES, stream: true});
    const out: string[] = [];
    let error: unknown = null;
    try {
        for await (const chunk of guardChatStream(source, {
            openSession: async () => streamSessionMonitor(await guard.createSession({messages: MESSAGES, maxTokens: 60}))
        }))
            out.push(chunk.choices[0]?.delta?.content ?? "");
    } catch (caught) {
        error = caught;
    }
    t.match(error, {name: "ContextLimitError"}, "the answer outgrew the session");
    const text = out.join("");
    t.ok(text.length > 0 && long.join("").startsWith(text) && text.length < long.join("").length / 2,
        `a judged prefix went out (${text.length} characters), not the rest`);
    t.equal(guard._context.usedCells(), 0, "the session was freed");

    // Gen judges whole texts: an answer over its context is never shown
    const huge = Array.from({length: 700}, (_, i) => ` word${i}`);
    const over = await guarded((await upstreamOf(t, answerChunks(huge), {delayMs: 0})).client, await gen());
    t.equal(over.text, "", "nothing of it went out");
    t.match(over.error, {name: "ContextLimitError"});
});

t.test("a GenGuard holds the answer until it is complete, then releases it or cuts all of it", async (t) => {
    const guard = await gen();
    const safe = await guarded((await upstreamOf(t, answerChunks(SAFE))).client, guard);
    t.equal(safe.text, SAFE.join(""));
    t.equal(safe.last?.choices[0].finish_reason, "stop");
    const unsafe = await guarded((await upstreamOf(t, answerChunks(SPLIT_UNSAFE))).client, guard);
    t.equal(unsafe.text, "");
    t.same(unsafe.chunks.map((chunk) => chunk.choices[0].finish_reason), [null, "content_filter"], "the role chunk, then the ending");
    t.match(unsafe.last?.qwen3guard, {response: {model: "gen", level: "Unsafe"}});
});

t.test("a RemoteGuard: the same cut, judged by a qwenguard serve's Stream model over its WebSocket", async (t) => {
    const server = await startServer(t);
    const guard = new RemoteGuard({url: server.url});
    const cut = await guarded((await upstreamOf(t, answerChunks(SPLIT_UNSAFE))).client, guard);
    t.equal(cut.text, "Sure, here is how:");
    t.match(cut.last?.qwen3guard, {response: {model: "stream", level: "Unsafe", stoppedAt: {offset: 18}}});
    const safe = await guarded((await upstreamOf(t, answerChunks(SAFE))).client, guard);
    t.equal(safe.text, SAFE.join(""));
    t.equal(safe.last?.choices[0].finish_reason, "stop");
    await waitFor(() => server.app.qwenguard.sessions.size === 0);
    t.equal(server.app.qwenguard.sessions.size, 0, "the remote sessions were closed");

    // a server that shuts down mid-answer ends the session with an error, not with a verdict
    const session = await guard.openSession(MESSAGES);
    await session.pushText("Once upon a time there was a");
    await server.app.close();
    await t.rejects(session.pushText(" cat").then(() => session.finish()), {name: "RemoteGuardError"});
    t.equal(session.flag, null);
    t.ok(session.releasableLength < "Once upon a time there was a cat".length, "what was not judged stays unreleased");
    await session.close();
});
