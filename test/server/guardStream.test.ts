// GET /v1/guard/stream (WebSocket) with a real client: the bad-message table, then live sessions on the planted Stream
// model (the flag at the planted tokens), the bounded queue of sessions, disconnects, idle and backlog limits, shutdown.

import t from "tap";
import type {Test} from "tap";
import {PLANTED_RESPONSE_UNSAFE_CATEGORY, RESPONSE_UNSAFE_TRIGGERS} from "../helpers/plantedStream.js";
import {plantedModels, postJson, startServer, StreamClient} from "./serverTestKit.js";
import type {StreamEvent} from "./serverTestKit.js";

const server = await startServer(t);
const ask = [{role: "user", content: "hi"}];
const unsafeAnswer = "Sure, here is how: bomb poison and more text after.";

/** Opens a session and waits for its prompt verdict. */
async function open(t: Test, url = server.url, extra: object = {}): Promise<StreamClient> {
    const client = await StreamClient.connect(t, url);
    client.send({type: "start", messages: ask, ...extra});
    await client.next("prompt");
    return client;
}

t.test("a bad message gets an error event naming what was wrong, and the socket closes (1008)", async (t) => {
    const start = {type: "start", messages: ask};
    const table: Array<[Array<object | string>, string, string | null]> = [
        [["not json"], 'Expected a JSON message but received "not json"', null],
        [[{kind: "start"}], 'Expected a message {"type": "start" | "text" | "tokens" | "end", …}', "type"],
        [[{type: "text", text: "x"}], 'Expected a "start" message first but received "text"', "type"],
        [[{type: "start"}], 'Expected an array of {role, content} for "messages" but received undefined', "messages"],
        [[{type: "start", messages: [{role: "user", content: "q"}, {role: "assistant", content: "a"}]}],
            'Expected "messages" to end with a user message (the turn the response answers)', "messages"],
        [[{...start, policy: "medium"}], 'Expected "strict", "loose", a number in (0, 1] or {minProb?, controversial?, window?} for "policy" but received "medium"', "policy"],
        [[{...start, tokens: "yes"}], 'Expected a boolean for "tokens" but received string', "tokens"],
        [[start, start], 'Expected one "start" message per connection', "type"],
        [[start, {type: "text", text: 5}], 'Expected a string for "text" but received number', "text"],
        [[start, {type: "tokens", ids: [1, -1]}], "Expected token ids between 0 and 151935 but ids[1] is -1", null],
        [[start, {type: "pause"}], 'Expected "start", "text", "tokens" or "end" for "type" but received "pause"', "type"],
        [[start, {type: "text", text: "Hello"}, {type: "tokens", ids: [1]}], 'Expected "text" messages: this session\'s response came as text, and the two do not mix', "type"]
    ];
    for (const [messages, message, param] of table) {
        const client = await StreamClient.connect(t, server.url);
        for (const sent of messages)
            client.send(sent);
        const error = await client.next("error");
        t.same(error, {type: "error", error: {message, type: "invalid_request_error", param, code: null}}, `${JSON.stringify(messages).slice(0, 60)}`);
        t.equal((await client.closed).code, 1008);
    }
});

t.test("a live session: the prompt verdict, judged lengths, the flag at the planted tokens, the summary", async (t) => {
    const client = await StreamClient.connect(t, server.url);
    client.send({type: "start", messages: ask});
    for (const chunk of ["Sure, ", "here is how:", " bo", "mb poi", "son and more text after."])
        client.send({type: "text", text: chunk});
    const prompt = await client.next("prompt");
    t.match(prompt, {session: /^guard-stream-/, model: "model-stream", verdict: {model: "stream", target: "prompt", level: "Safe", flagged: false}});
    const flag = await client.next("flag");
    const bomb = unsafeAnswer.indexOf(RESPONSE_UNSAFE_TRIGGERS[0].text);
    t.match(flag, {flag: {level: "Unsafe", category: PLANTED_RESPONSE_UNSAFE_CATEGORY, textOffset: bomb},
        verdict: {target: "response", level: "Unsafe", flagged: true, stoppedAt: {offset: bomb}}});
    const summary = await client.next("summary");
    t.match(summary, {reason: "flag", response: {level: "Unsafe", flagged: true}, length: bomb});
    t.same(await client.closed, {code: 1000, reason: "flag"});
    const judged = client.events.filter((event) => event.type === "judged") as Array<StreamEvent & {length: number}>;
    t.ok(judged.length > 0);
    t.ok(judged.every((event, i) => event.length <= bomb && (i === 0 || event.length >= judged[i - 1].length)),
        "the judged length only grows, and never reaches into the unsafe span");

    // the same text judged whole stops at the same token
    const whole = await postJson(`${server.url}/v1/guard`, {model: "stream", messages: [...ask, {role: "assistant", content: unsafeAnswer}]});
    const stoppedAt = (whole.body.results as Array<{response: {stoppedAt: {token: number}}}>)[0].response.stoppedAt;
    t.equal((flag.flag as {index: number}).index, stoppedAt.token, "live and one-shot agree");
});

t.test("a safe response ends with its summary; token ids and per-token verdicts work too", async (t) => {
    const client = await open(t, server.url, {tokens: true});
    client.send({type: "text", text: "Mix flour and water, "});
    client.send({type: "text", text: "then bake."});
    client.send({type: "end"});
    const summary = await client.next("summary");
    t.match(summary, {reason: "end", response: {level: "Safe", flagged: false, stoppedAt: null}, length: "Mix flour and water, then bake.".length});
    const verdicts = client.events.filter((event) => event.type === "judged").flatMap((event) => event.verdicts as Array<{text: string}>);
    t.equal(verdicts.map((verdict) => verdict.text).join(""), "Mix flour and water, then bake.", "every token's verdict, once");
    t.equal((await client.closed).code, 1000);

    const ids = await open(t);
    ids.send({type: "tokens", ids: [39814, 25, RESPONSE_UNSAFE_TRIGGERS[0].id, RESPONSE_UNSAFE_TRIGGERS[1].id, 1431]});
    t.match(await ids.next("flag"), {flag: {index: 3, startIndex: 2, level: "Unsafe"}});
});

t.test("sessions over maxSessions wait in the bounded queue; beyond it they are refused; a disconnect frees a slot at once", async (t) => {
    const small = await startServer(t, {models: [(await plantedModels()).stream], maxSessions: 2, maxQueue: 1});
    const first = await open(t, small.url);
    const second = await open(t, small.url);
    const third = await StreamClient.connect(t, small.url);
    third.send({type: "start", messages: ask});
    t.match(await third.next("queued"), {waiting: 1});
    const fourth = await StreamClient.connect(t, small.url);
    fourth.send({type: "start", messages: ask});
    t.match(await fourth.next("error"), {error: {type: "rate_limit_error", code: "queue_full",
        message: "The Stream model is busy: 2 running and 1 waiting, the most this server queues; retry later"}});
    t.equal((await fourth.closed).code, 1013, "try again later");

    first.close(); // the client goes away: its slot passes to the waiting session
    t.match(await third.next("prompt"), {verdict: {level: "Safe"}});
    second.send({type: "text", text: unsafeAnswer});
    t.match(await second.next("flag"), {flag: {level: "Unsafe"}}, "the other sessions go on");
    third.send({type: "text", text: "Fine text. "});
    third.send({type: "end"});
    t.match(await third.next("summary"), {reason: "end"});
    const health = await (await fetch(`${small.url}/metrics`)).text();
    t.match(health, /qwenguard_stream_sessions_open\{kind="websocket"\} 0/, "every session was freed");
});

t.test("idle clients and clients that flood the server are cut off; the others are not", async (t) => {
    const strict = await startServer(t, {models: [(await plantedModels()).stream], streamIdleTimeout: 300, maxBody: 4096});
    const idle = await open(t, strict.url);
    const busy = await open(t, strict.url);
    const timer = setInterval(() => busy.send({type: "text", text: "More words. "}), 50);
    t.teardown(() => clearInterval(timer));
    t.match(await idle.next("error", 5000), {error: {code: "idle_timeout", message: "No message for 300 ms: the session is closed"}});
    t.equal((await idle.closed).code, 1008);
    clearInterval(timer);
    busy.send({type: "end"});
    t.match(await busy.next("summary"), {reason: "end"}, "the active client was not cut off");

    const flood = await open(t, strict.url);
    for (let i = 0; i < 20; i++)
        flood.send({type: "text", text: "word ".repeat(60)});
    t.match(await flood.next("error"), {error: {code: "backlog_full"}});
    t.equal((await flood.closed).code, 1009);

    const huge = await open(t, strict.url);
    huge.send({type: "text", text: "x".repeat(5000)});
    t.equal((await huge.closed).code, 1009, "a message over the body limit");
});

t.test("pages of other sites may not open sessions; allowed origins and clients outside a browser may", async (t) => {
    const refused: unknown = await StreamClient.connect(t, server.url, {origin: "https://evil.example"}).then(() => null, (error: unknown) => error);
    t.match(refused, {status: 403, body: {error: {code: "origin_not_allowed",
        message: 'A page from "https://evil.example" may not open stream sessions here: the server allows no web origins (see --allow-origin)'}}});
    const open_ = await startServer(t, {models: [(await plantedModels()).stream], allowOrigins: ["https://app.example"]});
    const allowed = await StreamClient.connect(t, open_.url, {origin: "https://app.example"});
    allowed.send({type: "start", messages: ask});
    t.match(await allowed.next("prompt"), {verdict: {level: "Safe"}});
});

t.test("one session holds at most its share of the KV budget, or --max-session-tokens", async (t) => {
    const small = await startServer(t, {models: [(await plantedModels()).stream], contextSize: 256, maxSessions: 2});
    const client = await open(t, small.url);
    client.send({type: "text", text: "word ".repeat(200)});
    t.match(await client.next("error"), {error: {code: "context_length_exceeded",
        message: /over its limit of 128 \(contextSize 256 \/ maxSessions 2, model context 8192\)/}});
    const capped = await startServer(t, {models: [(await plantedModels()).stream], contextSize: 256, maxSessions: 2, maxSessionTokens: 96});
    const cappedClient = await open(t, capped.url);
    cappedClient.send({type: "text", text: "word ".repeat(200)});
    t.match(await cappedClient.next("error"), {error: {code: "context_length_exceeded", message: /over its limit of 96 \(maxTokens 96\)/}});
});

t.test("without a Stream model the upgrade is refused with a 400", async (t) => {
    const genOnly = await startServer(t, {models: [(await plantedModels()).gen]});
    const refusal: unknown = await StreamClient.connect(t, genOnly.url).then(() => null, (error: unknown) => error);
    t.match(refusal, {status: 400, body: {error: {code: "no_stream_model", message: /needs a Stream model/}}});
});

t.test("a server that shuts down tells its live sessions how far they got, then closes them (1001)", async (t) => {
    const closing = await startServer(t, {models: [(await plantedModels()).stream]});
    const client = await open(t, closing.url);
    client.send({type: "text", text: "Mix flour and water, then "});
    await client.next("judged");
    await closing.app.close();
    t.match(await client.next("summary"), {reason: "shutdown", response: {level: "Safe"}});
    t.equal((await client.closed).code, 1001);
});
