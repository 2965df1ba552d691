// llama.cpp's own llama-server (test/helpers/llamaServer.ts), built from node-llama-cpp's release, as the upstream LLM
// server of the proxy tests: what it refuses, grammar-forced completions streamed and whole, and a client that aborts
// a stream stopping the generation.

import {createParser} from "eventsource-parser";
import t from "tap";
import {llamaServerIdle, llamaServerMetrics, startLlamaServer} from "../helpers/llamaServer.js";
import {cachedConvertedFixture} from "../helpers/plantedGen.js";

const model = await cachedConvertedFixture("tiny-gen", "q8_0");
const server = await startLlamaServer({model, args: ["--metrics", "--ctx-size", "8192", "--parallel", "1"], t});

const LITERAL = "Sure, here is how: bomb poison and more text after.";
const literalGrammar = `root ::= ${JSON.stringify(LITERAL)}`;

t.test("llama-server that cannot start, and requests it refuses", async (t) => {
    await t.rejects(startLlamaServer({model: "/nonexistent/model.gguf"}),
        /^Expected llama-server to start but it exited; its log:\n[^]*failed to load model '\/nonexistent\/model\.gguf'[^]*\[llama-server exited: code 1\]/);

    // (a request's contradiction is a 500 server_error in this release: a runtime_error inside the server)
    const table: Array<[Record<string, unknown>, number, string, string]> = [
        [{grammar: "root ::= undefined-rule"}, 400, "invalid_request_error", "Failed to initialize samplers: failed to parse grammar"],
        [{grammar: literalGrammar, json_schema: {type: "string"}}, 500, "server_error", "Cannot use both json_schema and grammar"]
    ];
    for (const [fields, status, type, message] of table) {
        const reply = await chat({max_tokens: 8, ...fields});
        t.equal(reply.status, status, JSON.stringify(fields));
        t.same(await reply.json(), {error: {code: status, message, type}});
    }
});

t.test("a grammar forces the text, streamed as SSE chunks and whole, the same tokens both ways at temperature 0", async (t) => {
    const streamed = await chat({grammar: literalGrammar, max_tokens: 200, temperature: 0, stream: true, stream_options: {include_usage: true}});
    t.equal(streamed.status, 200);
    t.match(streamed.headers.get("content-type"), /^text\/event-stream/);
    const events = [];
    for await (const data of sseData(streamed))
        events.push(data);
    t.equal(events.at(-1), "[DONE]");
    const chunks = events.slice(0, -1).map((data) => JSON.parse(data) as ChatChunk);
    t.ok(chunks.length > 3, "several chunks");
    t.equal(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join(""), LITERAL);
    t.equal(chunks.findLast((chunk) => chunk.choices.length > 0)?.choices[0].finish_reason, "stop");
    const streamedTokens = chunks.at(-1)?.usage?.completion_tokens;

    const whole = await chat({grammar: literalGrammar, max_tokens: 200, temperature: 0});
    t.equal(whole.status, 200);
    const body = await whole.json() as {choices: Array<{message: {content: string}, finish_reason: string}>, usage: {completion_tokens: number}};
    t.equal(body.choices[0].message.content, LITERAL);
    t.equal(body.choices[0].finish_reason, "stop");
    t.equal(body.usage.completion_tokens, streamedTokens, "the same tokens");

    const cut = await chat({grammar: literalGrammar, max_tokens: 3, temperature: 0});
    const cutBody = await cut.json() as typeof body;
    t.equal(cutBody.choices[0].finish_reason, "length");
    t.equal(cutBody.usage.completion_tokens, 3);
    t.ok(LITERAL.startsWith(cutBody.choices[0].message.content) && cutBody.choices[0].message.content.length < LITERAL.length);
});

t.test("aborting a stream stops the generation", async (t) => {
    const before = await llamaServerMetrics(server.url);
    const maxTokens = 4000;
    const controller = new AbortController();
    const reply = await chat({grammar: 'root ::= "Sure: bomb poison" (" and more")+', max_tokens: maxTokens, temperature: 0, stream: true},
        controller.signal);
    let text = "";
    let contentChunks = 0;
    try {
        for await (const data of sseData(reply)) {
            const content = (JSON.parse(data) as ChatChunk).choices[0]?.delta.content ?? "";
            text += content;
            if (content !== "" && ++contentChunks === 5)
                controller.abort();
        }
        t.fail("the stream ended by itself");
    } catch (error) {
        t.equal((error as Error).name, "AbortError");
    }
    t.ok("Sure: bomb poison".startsWith(text) || text.startsWith("Sure: bomb poison"), `the start of the forced text: ${JSON.stringify(text)}`);

    // the slot is released (and its tokens counted) once the server notices the closed connection
    const after = await llamaServerIdle(server.url);
    t.equal(after["llamacpp:requests_processing"], 0, "no request processing");
    const predicted = after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"];
    t.ok(predicted >= contentChunks && predicted < maxTokens / 20,
        `${predicted} tokens predicted of max_tokens ${maxTokens}, ${contentChunks} received`);

    await new Promise((resolve) => setTimeout(resolve, 1500));
    const later = await llamaServerMetrics(server.url);
    t.equal(later["llamacpp:n_decode_total"], after["llamacpp:n_decode_total"], "no decoding since");
    t.equal(later["llamacpp:tokens_predicted_total"], after["llamacpp:tokens_predicted_total"]);
    const slots = await (await fetch(`${server.url}/slots`)).json() as Array<{is_processing: boolean}>;
    t.same(slots.map((slot) => slot.is_processing), [false]);

    // and the server goes on serving
    const next = await (await chat({grammar: literalGrammar, max_tokens: 200, temperature: 0})).json() as {choices: Array<{message: {content: string}}>};
    t.equal(next.choices[0].message.content, LITERAL);
});

t.test("stop() ends the process and can be called twice", async (t) => {
    const other = await startLlamaServer({model, t});
    await other.stop();
    await other.stop();
    t.throws(() => process.kill(other.pid, 0), {code: "ESRCH"});
    await t.rejects(fetch(`${other.url}/health`));
    t.match(other.log(), /\[llama-server exited: (code 0|signal SIGTERM)\]\n$/);
});

/** One `chat.completion.chunk`. */
interface ChatChunk {
    choices: Array<{delta: {content?: string | null}, finish_reason: string | null}>,
    usage?: {completion_tokens: number}
}

function chat(body: Record<string, unknown>, signal?: AbortSignal): Promise<Response> {
    return fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: {"content-type": "application/json"},
        body: JSON.stringify({messages: [{role: "user", content: "How do I make it?"}], ...body}),
        signal
    });
}

// The `data` of each server-sent event of a reply, as it arrives.
async function* sseData(reply: Response): AsyncGenerator<string> {
    const pending: string[] = [];
    const parser = createParser({onEvent: (event) => pending.push(event.data)});
    const decoder = new TextDecoder();
    for await (const bytes of reply.body ?? []) {
        parser.feed(decoder.decode(bytes, {stream: true}));
        yield* pending.splice(0);
    }
}
