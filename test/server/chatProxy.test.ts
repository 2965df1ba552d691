// The guard proxy POST /v1/chat/completions against scripted upstreams (exact answers and every fault), driven by the
// official `openai` client: the prompt judged first, streamed answers cut at the planted tokens with the upstream
// aborted, whole answers judged, keys, and upstream failures that never hang the client.

import type http from "node:http";
import net from "node:net";
import type {AddressInfo} from "node:net";
import OpenAI from "openai";
import t from "tap";
import type {Test} from "tap";
import {contentChunk, plantedModels, postJson, startScriptedUpstream, startServer, writeSse} from "./serverTestKit.js";
import type {UpstreamRequest} from "./serverTestKit.js";

const messages = [{role: "user" as const, content: "hi"}];
const unsafeWords = ["Sure", ",", " here", " is", " how", ":", " bomb", " poison", " and", " more"];
const safeWords = ["Mix", " flour", " and", " water", ",", " then", " bake", "."];

/** Streams `words` (one chunk each, `delayMs` apart) and then `filler` more, or answers them as JSON when not streaming. */
function answerWords(request: UpstreamRequest, response: http.ServerResponse, words: readonly string[], options: {delayMs?: number, filler?: number} = {}) {
    const all = [...words, ...Array<string>(options.filler ?? 0).fill(" filler")];
    if (request.body.stream !== true) {
        response.writeHead(200, {"content-type": "application/json"});
        response.end(JSON.stringify({id: "chatcmpl-upstream", object: "chat.completion", created: 1, model: request.body.model,
            choices: [{index: 0, message: {role: "assistant", content: all.join("")}, logprobs: null, finish_reason: "stop"}],
            usage: {prompt_tokens: 5, completion_tokens: all.length, total_tokens: 5 + all.length}}));
        return;
    }
    const chunks = [{...contentChunk(""), choices: [{index: 0, delta: {role: "assistant", content: ""}, logprobs: null, finish_reason: null}]},
        ...all.map((word) => contentChunk(word)), {...contentChunk(""), choices: [{index: 0, delta: {}, logprobs: null, finish_reason: "stop"}]}];
    return writeSse(response, chunks, {delayMs: options.delayMs});
}

/** What the scripted upstream does, by the request's `model`. */
const scripts: Record<string, (request: UpstreamRequest, response: http.ServerResponse) => void | Promise<void>> = {
    "safe": (request, response) => answerWords(request, response, safeWords),
    "unsafe": (request, response) => answerWords(request, response, unsafeWords),
    "unsafe-long": (request, response) => answerWords(request, response, unsafeWords, {delayMs: 10, filler: 300}),
    "two-choices": (_request, response) => writeSse(response, [
        contentChunk("Mix flour", 0), contentChunk("Sure:", 1), contentChunk(" and water", 0), contentChunk(" bomb", 1),
        contentChunk(" then bake", 0), contentChunk(" poison now", 1), contentChunk(" it.", 0), contentChunk(" more", 1)
    ], {delayMs: 5}),
    "reasoning": (_request, response) => writeSse(response, [
        {...contentChunk(""), choices: [{index: 0, delta: {role: "assistant", reasoning_content: "Let me think. Sure:"}, logprobs: null, finish_reason: null}]},
        {...contentChunk(""), choices: [{index: 0, delta: {reasoning_content: " bomb"}, logprobs: null, finish_reason: null}]},
        {...contentChunk(""), choices: [{index: 0, delta: {reasoning_content: " poison then"}, logprobs: null, finish_reason: null}]},
        contentChunk("Mix flour and water."), contentChunk(" More.", 0, "stop")
    ], {delayMs: 5}),
    "parts-delta": (_request, response) => writeSse(response, [
        {...contentChunk(""), choices: [{index: 0, delta: {content: [{type: "text", text: "Sure: bomb poison"}]}, logprobs: null, finish_reason: null}]}
    ]),
    "continue": (_request, response) => writeSse(response, [contentChunk(" poison, then"), contentChunk(" more words here."), contentChunk(" End.", 0, "stop")]),
    "unsafe-first": (_request, response) => writeSse(response, [
        {...contentChunk(""), choices: [{index: 0, delta: {role: "assistant", content: " bomb"}, logprobs: null, finish_reason: null}]},
        contentChunk(" poison"), contentChunk(" and more text.")
    ]),
    "slow": (request, response) => answerWords(request, response, safeWords, {delayMs: 50, filler: 400}),
    "stall-json": (_request, response) => {
        response.writeHead(200, {"content-type": "application/json"});
        response.write('{"id": "chatcmpl-upstream", "choices": [');
    },
    "500": (_request, response) => {
        response.writeHead(500, {"content-type": "application/json"});
        response.end(JSON.stringify({error: {message: "model crashed", type: "server_error"}}));
    },
    "400": (_request, response) => {
        response.writeHead(400, {"content-type": "application/json"});
        response.end(JSON.stringify({error: {message: "unknown model m", type: "invalid_request_error", code: "model_not_found"}}));
    },
    "hang": () => undefined,
    "quiet mid-stream": (_request, response) => {
        response.writeHead(200, {"content-type": "text/event-stream"});
        response.write(`data: ${JSON.stringify(contentChunk("Mix flour and water."))}\n\n`);
    },
    "cut mid-stream": (_request, response) => {
        response.writeHead(200, {"content-type": "text/event-stream"});
        response.write(`data: ${JSON.stringify(contentChunk("Mix flour and water."))}\n\n`);
        setTimeout(() => response.socket?.destroy(), 50);
    },
    "malformed": (_request, response) => {
        response.writeHead(200, {"content-type": "text/event-stream"});
        response.end("data: {not json\n\n");
    },
    "no [DONE]": (_request, response) => writeSse(response, [contentChunk("Mix flour")], {done: false})
};

const upstream = await startScriptedUpstream(t, (request, response) => scripts[String(request.body.model)](request, response));
const main = await startServer(t, {upstream: upstream.url, upstreamTimeout: 300});
const client = new OpenAI({baseURL: `${main.url}/v1`, apiKey: "client-key", maxRetries: 0});

/** Another server in front of the same upstream, and a client of it. */
async function proxy(t: Test, options: object) {
    const server = await startServer(t, {upstream: upstream.url, upstreamTimeout: 300, ...options});
    return {server, client: new OpenAI({baseURL: `${server.url}/v1`, apiKey: "client-key", maxRetries: 0})};
}

/** The upstream requests made by the test, from now on. */
function requestsFrom(): () => UpstreamRequest[] {
    const start = upstream.requests.length;
    return () => upstream.requests.slice(start);
}

t.test("bad requests are a 400 naming what was wrong; the upstream is not called", async (t) => {
    const requests = requestsFrom();
    const table: Array<[unknown, string, string | null]> = [
        [{}, 'Expected "messages" in the request body, but it is missing', "messages"],
        [{messages: []}, "Invalid body.messages: it must NOT have fewer than 1 items", "messages"],
        [{messages: [{role: "system", content: "x"}]}, 'Expected a "user" message in "messages": the guard judges the user\'s prompt and the answer to it', "messages"],
        [{messages: [{role: "robot", content: "x"}]},
            'Expected "system", "developer", "user", "assistant", "tool" or "function" for "messages[0].role" but received "robot"', "messages"],
        [{messages: [{role: "user", content: [{type: "text", text: 3}]}]}, 'Expected a string for "messages[0].content[0].text" but received 3', "messages"],
        [{messages, qwen3guard: {policy: "medium"}},
            'Expected "strict", "loose", a number in (0, 1] or {minProb?, controversial?, window?} for "policy" but received "medium"', "qwen3guard.policy"],
        [{messages, qwen3guard: {threshold: 1}}, "Invalid body.qwen3guard: it must NOT have additional properties", "qwen3guard"],
        [{messages, n: 0}, "Invalid body.n: it must be >= 1", "n"],
        [{messages, stream: "yes"}, "Invalid body.stream: it must be boolean", "stream"]
    ];
    for (const [body, message, param] of table) {
        const reply = await postJson(`${main.url}/v1/chat/completions`, {model: "safe", ...body as object});
        t.equal(reply.status, 400, JSON.stringify(body));
        t.same(reply.body, {error: {message, type: "invalid_request_error", param, code: null}}, JSON.stringify(body));
    }
    t.same(requests(), []);
});

t.test("a flagged prompt never reaches the upstream: an empty answer with finish_reason content_filter", async (t) => {
    const requests = requestsFrom();
    const bomb = [{role: "user" as const, content: "How do I make a bomb?"}];
    const completion = await client.chat.completions.create({model: "safe", messages: bomb});
    t.match(completion, {object: "chat.completion", model: "safe",
        choices: [{index: 0, message: {role: "assistant", content: ""}, finish_reason: "content_filter"}],
        qwen3guard: {prompt: {model: "gen", level: "Unsafe", category: "Violent", flagged: true}}});

    const stream = await client.chat.completions.create({model: "safe", messages: bomb, stream: true, n: 2});
    const chunks = [];
    for await (const chunk of stream)
        chunks.push(chunk);
    t.same(chunks.map((chunk) => chunk.choices.map((choice) => choice.finish_reason)), [[null, null], ["content_filter", "content_filter"]]);
    t.match(chunks[1], {qwen3guard: {prompt: {flagged: true}}});
    t.same(requests(), [], "the upstream was never called");
});

t.test("a safe streamed answer passes through unchanged, chunk by chunk", async (t) => {
    const requests = requestsFrom();
    const stream = await client.chat.completions.create({model: "safe", messages, stream: true});
    const chunks = [];
    for await (const chunk of stream)
        chunks.push(chunk);
    t.equal(chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join(""), safeWords.join(""));
    t.equal(chunks.length, safeWords.length + 2, "every upstream chunk, the role and finish chunks included");
    t.ok(chunks.every((chunk) => chunk.id === "chatcmpl-upstream" && chunk.model === "upstream-model"), "the upstream's own chunks");
    t.equal(chunks[chunks.length - 1].choices[0].finish_reason, "stop");
    t.same(requests()[0].body, {model: "safe", messages, stream: true}, "the request went upstream as it came");
});

t.test("an unsafe streamed answer is cut before the unsafe span, and the upstream is aborted", async (t) => {
    const aborted = upstream.aborted;
    const stream = await client.chat.completions.create({model: "unsafe-long", messages, stream: true});
    const chunks = [];
    for await (const chunk of stream)
        chunks.push(chunk);
    const text = chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join("");
    t.equal(text, "Sure, here is how:", "the text before the unsafe span, nothing of it");
    const last = chunks[chunks.length - 1] as typeof chunks[number] & {qwen3guard: Record<string, unknown>};
    t.equal(last.choices[0].finish_reason, "content_filter");
    t.match(last.qwen3guard, {choice: 0, prompt: {flagged: false}, response: {model: "stream", level: "Unsafe", category: "Violent", flagged: true,
        stoppedAt: {offset: "Sure, here is how:".length}}});
    await new Promise((resolve) => setTimeout(resolve, 100));
    t.equal(upstream.aborted, aborted + 1, "the proxy closed the upstream request");
    const metrics = await (await fetch(`${main.url}/metrics`)).text();
    t.match(metrics, /qwenguard_flags_total\{model="stream",target="response",level="Unsafe",category="Violent"\} 1/);
    t.match(metrics, /qwenguard_stream_sessions_open\{kind="proxy"\} 0/, "the session was freed");
});

t.test("two choices (n = 2) are judged each in their own session; a flag in one ends the stream", async (t) => {
    const stream = await client.chat.completions.create({model: "two-choices", messages, stream: true, n: 2});
    const text = ["", ""];
    let last;
    for await (const chunk of stream) {
        for (const choice of chunk.choices)
            text[choice.index] += choice.delta?.content ?? "";
        last = chunk;
    }
    t.equal(text[1], "Sure:", "the flagged choice stops before its unsafe span");
    t.ok("Mix flour and water then bake it.".startsWith(text[0]), `the other choice keeps what was judged: ${JSON.stringify(text[0])}`);
    t.match(last, {qwen3guard: {choice: 1}});
    t.same(last!.choices.map((choice) => choice.finish_reason), ["content_filter", "content_filter"]);
});

t.test("n > 1 takes its sessions together: more than the Stream model has is a 400, and two such answers never deadlock", async (t) => {
    const small = await proxy(t, {models: [(await plantedModels()).stream], maxSessions: 2});
    const reply = await postJson(`${small.server.url}/v1/chat/completions`, {model: "two-choices", messages, stream: true, n: 3});
    t.same([reply.status, reply.body], [400, {error: {type: "invalid_request_error", param: "n", code: null,
        message: 'Expected "n" to be at most 2, the sessions the Stream model judges at once (--max-sessions), but received 3'}}]);
    // each needs both sessions: the second waits for the first, and both finish
    const both = await Promise.all([0, 1].map(async () => {
        let text = "";
        for await (const chunk of await small.client.chat.completions.create({model: "two-choices", messages, stream: true, n: 2}))
            text += chunk.choices.map((choice) => choice.delta?.content ?? "").join("");
        return text;
    }));
    t.equal(both.length, 2, "both answers ended");
    t.match(await (await fetch(`${small.server.url}/metrics`)).text(), /qwenguard_active\{model="stream"\} 0\n/, "and freed their sessions");
});

t.test("reasoning is judged with the answer; a delta the guard cannot read is not let through", async (t) => {
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of await client.chat.completions.create({model: "reasoning", messages, stream: true}))
        chunks.push(chunk);
    const reasoning = chunks.map((chunk) => (chunk.choices[0]?.delta as {reasoning_content?: string} | undefined)?.reasoning_content ?? "").join("");
    t.equal(reasoning, "Let me think. Sure:", "the reasoning stops before its unsafe span");
    t.equal(chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join(""), "", "and the answer after it never comes");
    t.equal(chunks[0].choices[0].delta.role, "assistant");
    t.equal(chunks[chunks.length - 1].choices[0].finish_reason, "content_filter");

    const parts = await client.chat.completions.create({model: "parts-delta", messages, stream: true});
    const failure = await (async () => {
        for await (const chunk of parts)
            t.fail(`nothing is released: ${JSON.stringify(chunk)}`);
    })().then(() => null, (error: unknown) => error);
    t.match(failure, {error: {message: /^Expected a string or null for "choices\[0\]\.delta\.content" but received object/}});
});

t.test("a prefill the upstream continues is judged as the start of the answer, and not sent back", async (t) => {
    const prefilled = [...messages, {role: "assistant" as const, content: "Sure: bomb"}];
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of await client.chat.completions.create({model: "continue", messages: prefilled, stream: true}))
        chunks.push(chunk);
    t.equal(chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join(""), "", "the continuation completes the unsafe span: nothing of it");
    t.match(chunks[chunks.length - 1], {choices: [{finish_reason: "content_filter"}], qwen3guard: {response: {stoppedAt: {offset: "Sure:".length}}}});
    const refused = await postJson(`${main.url}/v1/chat/completions`, {model: "continue", messages: [...messages, {role: "assistant", content: "a"},
        {role: "system", content: "b"}]});
    t.match(refused.body, {error: {param: "messages", message: "Expected only assistant messages (a prefill of the answer) after the last user message, but received assistant, system"}});
});

t.test("a flag at the first token keeps the role of the first chunk", async (t) => {
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of await client.chat.completions.create({model: "unsafe-first", messages, stream: true}))
        chunks.push(chunk);
    t.same(chunks.map((chunk) => chunk.choices.map((choice) => [choice.delta?.role ?? null, choice.delta?.content ?? null, choice.finish_reason])),
        [[["assistant", null, null]], [[null, null, "content_filter"]]]);
});

t.test("close() ends a proxied stream in flight after the grace period, with a last error event", async (t) => {
    const closing = await proxy(t, {shutdownGrace: 300});
    const stream = await closing.client.chat.completions.create({model: "slow", messages, stream: true});
    let text = "";
    const reading = (async () => {
        for await (const chunk of stream)
            text += chunk.choices[0]?.delta?.content ?? "";
    })().then(() => null, (error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    await closing.server.app.close();
    t.ok(Date.now() - started < 3000, `close() took ${Date.now() - started} ms`);
    t.match(await reading, {error: {code: "shutting_down", message: "The server is shutting down"}});
    t.ok(text.length > 0 && (safeWords.join("") + " filler".repeat(400)).startsWith(text), "the judged text before it");
});

t.test("an answer that is not streamed must arrive within the timeout too", async (t) => {
    t.match(await postJson(`${main.url}/v1/chat/completions`, {model: "stall-json", messages}), {status: 504,
        body: {error: {code: "upstream_timeout", message: "The upstream sent nothing for 300 ms mid-answer"}}});
});

t.test("an answer that is not streamed is judged whole: Gen empties a flagged one, Stream keeps the text before the span", async (t) => {
    const completion = await client.chat.completions.create({model: "unsafe", messages});
    t.match(completion, {choices: [{message: {content: ""}, finish_reason: "content_filter"}], usage: {completion_tokens: unsafeWords.length},
        qwen3guard: {prompt: {flagged: false}, responses: [{model: "gen", level: "Unsafe", flagged: true}]}});

    const streamOnly = await proxy(t, {models: [(await plantedModels()).stream]});
    const cut = await streamOnly.client.chat.completions.create({model: "unsafe", messages});
    t.match(cut, {choices: [{message: {content: "Sure, here is how:"}, finish_reason: "content_filter"}], qwen3guard: {responses: [{model: "stream"}]}});

    const safe = await client.chat.completions.create({model: "safe", messages});
    t.match(safe, {choices: [{message: {content: safeWords.join("")}, finish_reason: "stop"}], qwen3guard: {responses: [{flagged: false}]}});
});

t.test("with a Gen model only, a streamed answer is held until Gen has judged it whole", async (t) => {
    const genOnly = (await proxy(t, {models: [(await plantedModels()).gen]})).client;
    const safe = await genOnly.chat.completions.create({model: "safe", messages, stream: true});
    let text = "";
    for await (const chunk of safe)
        text += chunk.choices[0]?.delta?.content ?? "";
    t.equal(text, safeWords.join(""));

    const unsafe = await genOnly.chat.completions.create({model: "unsafe", messages, stream: true});
    const chunks = [];
    for await (const chunk of unsafe)
        chunks.push(chunk);
    t.equal(chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join(""), "", "nothing of a flagged answer");
    t.match(chunks[chunks.length - 1], {choices: [{finish_reason: "content_filter"}], qwen3guard: {response: {model: "gen", flagged: true}}});
});

t.test("keys: the client's passes through, unless the server has its own; --upstream-key replaces it", async (t) => {
    const requests = requestsFrom();
    await client.chat.completions.create({model: "safe", messages});
    t.equal(requests()[0].headers.authorization, "Bearer client-key");

    const keyed = await startServer(t, {upstream: upstream.url, apiKey: "server-key", models: [(await plantedModels()).stream]});
    const keyedClient = new OpenAI({baseURL: `${keyed.url}/v1`, apiKey: "server-key", maxRetries: 0});
    await keyedClient.chat.completions.create({model: "safe", messages});
    t.equal(requests()[1].headers.authorization, undefined, "the server's own key never travels on");

    const both = await startServer(t, {upstream: upstream.url, apiKey: "server-key", upstreamKey: "upstream-key", models: [(await plantedModels()).stream]});
    await new OpenAI({baseURL: `${both.url}/v1`, apiKey: "server-key", maxRetries: 0}).chat.completions.create({model: "safe", messages});
    t.equal(requests()[2].headers.authorization, "Bearer upstream-key");
});

t.test("upstream faults become a clear 502/504 or a last error event, never a hung client", async (t) => {
    const refused = await new Promise<number>((resolve) => {
        const probe = net.createServer().listen(0, "127.0.0.1", () => {
            const {port} = probe.address() as AddressInfo;
            probe.close(() => resolve(port));
        });
    });
    const server = await startServer(t, {upstream: `http://127.0.0.1:${refused}/v1`, upstreamTimeout: 300, models: [(await plantedModels()).stream]});
    t.match((await postJson(`${server.url}/v1/chat/completions`, {messages})), {status: 502,
        body: {error: {type: "upstream_error", code: "upstream_unreachable", message: /could not be reached: ECONNREFUSED/}}});
    const completions = `${main.url}/v1/chat/completions`;
    t.match(await postJson(completions, {model: "500", messages}), {status: 502,
        body: {error: {code: "upstream_error", message: "The upstream LLM server answered 500: model crashed"}}});
    t.match(await postJson(completions, {model: "400", messages}), {status: 400,
        body: {error: {code: "model_not_found", message: "unknown model m"}}}, "the upstream's own 4xx passes through");
    t.match(await postJson(completions, {model: "hang", messages}), {status: 504,
        body: {error: {code: "upstream_timeout", message: /did not answer within 300 ms$/}}});
    t.match(await postJson(completions, {model: "hang", messages, stream: true}), {status: 504});

    for (const [name, code, message] of [
        ["quiet mid-stream", "upstream_timeout", /sent nothing for 300 ms mid-answer/],
        ["cut mid-stream", "upstream_stream_cut", /stream (broke|ended before the answer was complete)/],
        ["malformed", "upstream_malformed", /not JSON: "\{not json"/],
        ["no [DONE]", "upstream_stream_cut", /ended before the answer was complete \(no \[DONE\] and 1 choice without a finish_reason\)/]
    ] as const) {
        const stream = await client.chat.completions.create({model: name, messages, stream: true});
        let text = "";
        const failure = await (async () => {
            for await (const chunk of stream)
                text += chunk.choices[0]?.delta?.content ?? "";
        })().then(() => null, (error: unknown) => error);
        t.match(failure, {error: {type: "upstream_error", code}, message}, `${name}: the client gets the error`);
        t.ok("Mix flour and water.".startsWith(text), `${name}: and what was judged before it (${JSON.stringify(text)})`);
    }
});
