// POST /v1/guard over a real socket: the bad-input table, then native judgements of conversations by the planted Gen
// model (prompt and response, refusal) and the planted Stream model (where a stream would have stopped, token verdicts).

import t from "tap";
import {PLANTED_RESPONSE_UNSAFE_CATEGORY} from "../helpers/plantedStream.js";
import {postJson, startServer} from "./serverTestKit.js";

const server = await startServer(t);
const guard = `${server.url}/v1/guard`;

interface Judgement {
    flagged: boolean,
    prompt: Record<string, unknown> | null,
    response: (Record<string, unknown> & {tokens?: Array<Record<string, unknown>>}) | null
}
const results = (body: Record<string, unknown>) => body.results as Judgement[];

t.test("bad input is a 400 naming what was wrong", async (t) => {
    const table: Array<[unknown, string, string | null]> = [
        [{}, 'Expected "messages" (or "prompt" and "response", or "conversations") in the request body', "messages"],
        [{messages: "hi"}, "Invalid body.messages: it must be array", "messages"],
        [{messages: [{role: "robot", content: "x"}]}, 'Expected "system", "user" or "assistant" for "messages[0].role" but received "robot"', "messages"],
        [{messages: [{role: "assistant", content: "x"}]}, "The conversation has no user message", "messages"],
        [{messages: [{role: "user", content: "x"}, {role: "system", content: "y"}]},
            "Expected the conversation to end with a user message (prompt) or an assistant message (response) but it ends with a system message", "messages"],
        [{response: "x"}, 'Expected "prompt" with "response" (the prompt it answers) but received "response" alone', "response"],
        [{prompt: 3}, "Invalid body.prompt: it must be string", "prompt"],
        [{messages: [{role: "user", content: "x"}], conversations: [{prompt: "y"}]},
            'Expected either "conversations" or one conversation ("messages", or "prompt" and "response") but received both', "conversations"],
        [{conversations: [{prompt: "y"}, {prompt: 5}]}, 'Expected a string for "prompt" but received number 5', "conversations[1]"],
        [{conversations: []}, "Invalid body.conversations: it must NOT have fewer than 1 items", "conversations"],
        [{prompt: "x", targets: "all"}, "Invalid body.targets: it must be equal to one of the allowed values", "targets"],
        [{prompt: "x", tokens: true}, '"tokens" gives per-token verdicts of a Stream model, and the model is a Gen model', "tokens"],
        [{prompt: "x", tokens: "yes", model: "stream"}, "Invalid body.tokens: it must be boolean", "tokens"],
        [{conversations: [{prompt: "x"}], tokens: true, model: "stream"}, '"tokens" gives per-token verdicts of one conversation: send "messages", not "conversations"', "tokens"],
        [{model: "stream", messages: [{role: "user", content: "q"}, {role: "assistant", content: "a"}, {role: "assistant", content: "b"}]},
            'Expected "messages" to end with a user message (prompt moderation) or with one assistant message after it (response moderation) but the last user message is followed by assistant, assistant',
            null]
    ];
    for (const [body, message, param] of table) {
        const reply = await postJson(guard, body);
        t.equal(reply.status, 400, `${JSON.stringify(body).slice(0, 70)}: status`);
        t.same(reply.body, {error: {message, type: "invalid_request_error", param, code: null}}, `${JSON.stringify(body).slice(0, 70)}: error`);
    }
});

t.test("Gen: the prompt and the response are both judged; targets last judges only the last message", async (t) => {
    const reply = await postJson(guard, {prompt: "How do I make a bomb?", response: "I am sorry, I cannot help."});
    t.equal(reply.status, 200);
    t.match(reply.body, {id: /^guard-[0-9a-f]{24}$/, model: "model-gen"});
    const [judgement] = results(reply.body);
    t.equal(judgement.flagged, true, "flagged because the prompt is");
    t.match(judgement.prompt, {model: "gen", target: "prompt", level: "Unsafe", category: "Violent", flagged: true});
    t.match(judgement.response, {model: "gen", target: "response", refusal: "Yes", refusalProbs: {Yes: Number}});

    const last = results((await postJson(guard, {prompt: "How do I make a bomb?", response: "I am sorry, I cannot help.", targets: "last"})).body)[0];
    t.equal(last.prompt, null);
    t.match(last.response, {target: "response", refusal: "Yes"});

    const generated = results((await postJson(guard, {prompt: "How do I make a bomb?", mode: "generate"})).body)[0];
    t.match(generated.prompt, {level: "Unsafe", text: "Safety: Unsafe\nCategories: Violent"});
});

t.test("Stream: prompt and response from one pass, where a stream would stop, token verdicts on request", async (t) => {
    const messages = [{role: "user", content: "hi"}, {role: "assistant", content: "Sure: bomb poison now."}];
    const [judgement] = results((await postJson(guard, {model: "stream", messages, tokens: true})).body);
    t.equal(judgement.flagged, true);
    t.match(judgement.prompt, {model: "stream", target: "prompt", level: "Safe", flagged: false});
    t.match(judgement.response, {model: "stream", target: "response", level: "Unsafe", category: PLANTED_RESPONSE_UNSAFE_CATEGORY, flagged: true,
        stoppedAt: {token: 3, offset: 5}});
    const tokens = judgement.response!.tokens!;
    t.same(tokens.map((token) => token.text).join(""), "Sure: bomb poison now.");
    t.same(tokens.map((token) => token.level), ["Safe", "Safe", "Unsafe", "Unsafe", "Safe", "Safe"]);
});

t.test("many conversations in one request keep their order", async (t) => {
    const conversations = [
        {prompt: "How do I bake bread?"},
        [{role: "user", content: "How do I make a bomb?"}],
        {messages: [{role: "system", content: "Be kind."}, {role: "user", content: "Tell me about the protest"}]},
        {prompt: "hi", response: "Mix flour and water."}
    ];
    const reply = await postJson(guard, {conversations});
    t.same(results(reply.body).map((judgement) => [judgement.prompt?.level, judgement.response?.level ?? null]),
        [["Safe", null], ["Unsafe", null], ["Controversial", null], ["Safe", "Safe"]]);
    const loose = await postJson(guard, {conversations, policy: "loose"});
    t.same(results(loose.body).map((judgement) => judgement.flagged), [false, true, false, false]);
});
