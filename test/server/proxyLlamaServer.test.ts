// The guard proxy in front of a REAL llama.cpp llama-server (built from node-llama-cpp's release), driven by the official
// `openai` client: llama-server's own `grammar` field (passed through) makes a generated model write the planted trigger
// text, the guard cuts the streamed answer off before it, and llama-server stops generating.

import OpenAI from "openai";
import t from "tap";
import {llamaServerIdle, llamaServerMetrics, startLlamaServer} from "../helpers/llamaServer.js";
import {cachedConvertedFixture} from "../helpers/plantedGen.js";
import {startServer} from "./serverTestKit.js";

const llama = await startLlamaServer({model: await cachedConvertedFixture("tiny-gen", "q8_0"), args: ["--metrics", "--ctx-size", "8192", "--parallel", "1"], t});
const guard = await startServer(t, {upstream: `${llama.url}/v1`, upstreamTimeout: 30_000});
const client = new OpenAI({baseURL: `${guard.url}/v1`, apiKey: "unused", maxRetries: 0});
const direct = new OpenAI({baseURL: `${llama.url}/v1`, apiKey: "unused", maxRetries: 0});
const messages = [{role: "user" as const, content: "How do I make it?"}];

/** llama-server's request fields the openai client does not know: they pass through the proxy. */
type LlamaFields = {grammar: string};

t.test("an unsafe streamed answer is cut before the unsafe span and llama-server stops generating", async (t) => {
    const before = await llamaServerMetrics(llama.url);
    const maxTokens = 4000;
    const stream = await client.chat.completions.create({model: "tiny", messages, stream: true, max_tokens: maxTokens, temperature: 0,
        grammar: 'root ::= "Sure, here is how: bomb poison" (" and more")+'} as OpenAI.ChatCompletionCreateParamsStreaming & LlamaFields);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream)
        chunks.push(chunk);
    t.equal(chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join(""), "Sure, here is how:", "nothing of the unsafe span");
    const last = chunks[chunks.length - 1] as typeof chunks[number] & {qwen3guard?: Record<string, unknown>};
    t.equal(last.choices[0].finish_reason, "content_filter");
    t.match(last.qwen3guard, {response: {model: "stream", level: "Unsafe", category: "Violent", stoppedAt: {offset: "Sure, here is how:".length}}});
    t.ok(chunks.slice(0, -1).every((chunk) => chunk.object === "chat.completion.chunk" && chunk.id === chunks[0].id), "llama-server's own chunks");

    const after = await llamaServerIdle(llama.url);
    t.equal(after["llamacpp:requests_processing"], 0, "llama-server is no longer generating");
    const predicted = after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"];
    t.ok(predicted < maxTokens / 20, `${predicted} tokens predicted of max_tokens ${maxTokens}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    t.equal((await llamaServerMetrics(llama.url))["llamacpp:n_decode_total"], after["llamacpp:n_decode_total"], "and stays stopped");
});

t.test("a safe answer comes through as llama-server wrote it, streamed and whole", async (t) => {
    const text = "Mix flour and water, knead, let it rise, then bake it for forty minutes.";
    const fields = {model: "tiny", messages, max_tokens: 200, temperature: 0, grammar: `root ::= ${JSON.stringify(text)}`};
    const stream = await client.chat.completions.create({...fields, stream: true} as OpenAI.ChatCompletionCreateParamsStreaming & LlamaFields);
    let streamed = "";
    let finish: string | null = null;
    for await (const chunk of stream) {
        streamed += chunk.choices[0]?.delta?.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    t.equal(streamed, text);
    t.equal(finish, "stop");

    const whole = await client.chat.completions.create(fields as OpenAI.ChatCompletionCreateParamsNonStreaming & LlamaFields);
    const straight = await direct.chat.completions.create(fields as OpenAI.ChatCompletionCreateParamsNonStreaming & LlamaFields);
    t.equal(whole.choices[0].message.content, text);
    t.equal(whole.choices[0].message.content, straight.choices[0].message.content, "the same as talking to llama-server directly");
    t.match(whole, {qwen3guard: {prompt: {flagged: false}, responses: [{model: "gen", flagged: false}]}});
});

t.test("an unsafe answer that is not streamed is returned without its content", async (t) => {
    const whole = await client.chat.completions.create({model: "tiny", messages, max_tokens: 200, temperature: 0,
        grammar: 'root ::= "Sure, here is how: bomb poison and more."'} as OpenAI.ChatCompletionCreateParamsNonStreaming & LlamaFields);
    t.match(whole, {choices: [{message: {content: ""}, finish_reason: "content_filter"}], qwen3guard: {responses: [{model: "gen", level: "Unsafe"}]}});
});

t.test("llama-server's own errors pass through with their status", async (t) => {
    await t.rejects(client.chat.completions.create({model: "tiny", messages, max_tokens: 8, grammar: "root ::= undefined-rule"} as
        OpenAI.ChatCompletionCreateParamsNonStreaming & LlamaFields), {status: 400, message: /failed to parse grammar/});
});
