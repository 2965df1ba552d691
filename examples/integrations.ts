// The README's "Use with the AI SDK" and "Use with the OpenAI client", run for real: an answer whose unsafe span
// (" bomb poison") arrives split across deltas, streamed (1) by an AI SDK model wrapped in qwenguardMiddleware and
// (2) by an OpenAI-compatible server read with the official `openai` client through guardChatStream. The LLM is a
// stand-in that streams fixed deltas (an AI SDK model object, and a node:http server speaking OpenAI's SSE).
//
//   node dist/examples/integrations.js <stream-guard.gguf>

import http from "node:http";
import type {AddressInfo} from "node:net";
import {streamText, wrapLanguageModel} from "ai";
import type {LanguageModelV4, LanguageModelV4StreamPart} from "@ai-sdk/provider";
import OpenAI from "openai";
import {StreamGuard, guardChatStream} from "../src/index.js";
import {qwenguardMiddleware} from "../src/ai-sdk/index.js";

const DELTAS = ["Sure, here ", "is how: bo", "mb poison", " and more.", " Step one:", " mix", " the", " parts", " slowly."];

/** An AI SDK model that streams DELTAS, one every 20 ms. */
const llm: LanguageModelV4 = {
    specificationVersion: "v4", provider: "example", modelId: "fixed-deltas", supportedUrls: {},
    doGenerate: () => Promise.reject(new Error("streams only")),
    async doStream({abortSignal}) {
        const parts: LanguageModelV4StreamPart[] = [{type: "stream-start", warnings: []}, {type: "text-start", id: "t"},
            ...DELTAS.map((delta): LanguageModelV4StreamPart => ({type: "text-delta", id: "t", delta})), {type: "text-end", id: "t"},
            {type: "finish", finishReason: {unified: "stop", raw: "stop"}, usage: {inputTokens: {total: 9, noCache: 9, cacheRead: 0, cacheWrite: 0},
                outputTokens: {total: 12, text: 12, reasoning: 0}}}];
        abortSignal?.addEventListener("abort", () => console.log("  (the model's call was aborted)"));
        return {stream: new ReadableStream({
            async pull(controller) {
                await new Promise((resolve) => setTimeout(resolve, 20));
                const part = parts.shift();
                if (part == null)
                    controller.close();
                else
                    controller.enqueue(part);
            }
        })};
    }
};

async function aiSdk(guard: StreamGuard): Promise<void> {
    console.log("AI SDK: streamText through qwenguardMiddleware");
    const model = wrapLanguageModel({model: llm, middleware: qwenguardMiddleware({stream: guard})});
    const result = streamText({model, prompt: "How do I get rid of the weeds in my garden?"});
    for await (const part of result.fullStream)
        if (part.type === "text-delta" || part.type === "finish")
            console.log(`  ${part.type} ${JSON.stringify(part.type === "text-delta" ? part.text : part.finishReason)}`);
    const {qwenguard} = (await result.providerMetadata)!;
    const {prompt, response} = qwenguard as unknown as {prompt: {level: string}, response: {level: string, category: string, stoppedAt: object}};
    console.log(`  providerMetadata.qwenguard: prompt ${prompt.level}, response ${response.level} (${response.category}), stoppedAt ${JSON.stringify(response.stoppedAt)}`);
}

async function openaiClient(guard: StreamGuard): Promise<void> {
    console.log("openai client: chat.completions.create({stream: true}) through guardChatStream");
    const server = http.createServer((_request, response) => {
        response.writeHead(200, {"content-type": "text/event-stream"});
        const chunks = ["", ...DELTAS].map((content, i) => ({id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: "llm",
            choices: [{index: 0, delta: i === 0 ? {role: "assistant", content} : {content}, logprobs: null, finish_reason: null}]}));
        const timer = setInterval(() => {
            const chunk = chunks.shift();
            response.write(chunk != null ? `data: ${JSON.stringify(chunk)}\n\n` : "data: [DONE]\n\n");
            if (chunk == null) {
                clearInterval(timer);
                response.end();
            }
        }, 20);
        response.on("close", () => {
            clearInterval(timer);
            if (!response.writableFinished)
                console.log("  (the LLM server saw the request closed)");
        });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const openai = new OpenAI({baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, apiKey: "sk-local"});
    const messages: OpenAI.ChatCompletionMessageParam[] = [{role: "user", content: "How do I get rid of the weeds in my garden?"}];
    const stream = await openai.chat.completions.create({model: "llm", messages, stream: true});
    for await (const chunk of guardChatStream(stream, {guard, messages})) {
        const {delta, finish_reason: finish} = chunk.choices[0];
        const verdict = (chunk as {qwen3guard?: {response: {level: string}}}).qwen3guard;
        console.log(`  ${JSON.stringify(delta)} finish_reason ${finish}${verdict != null ? ` qwen3guard.response.level ${verdict.response.level}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    server.close();
}

if (process.argv[1]?.endsWith("integrations.js") && process.argv.length === 3) {
    const guard = await StreamGuard.load({model: process.argv[2]});
    await aiSdk(guard);
    await openaiClient(guard);
    await guard.dispose();
}
