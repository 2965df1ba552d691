import type {FastifyInstance} from "fastify";
import type {Message} from "../../conversation/messages.js";
import {conversationOf} from "../../moderation/conversationOf.js";
import {ApiError} from "../ApiError.js";
import {assertReady, checked, clientGone, judgeAll, requestPolicy, requestedModel, responseId, resultsReply} from "./routeKit.js";

/** Most conversations one request may judge. */
export const MAX_GUARD_CONVERSATIONS = 1024;

const guardBody = {
    type: "object",
    properties: {
        messages: {type: "array"},
        prompt: {type: "string"},
        response: {type: "string"},
        conversations: {type: "array", minItems: 1, maxItems: MAX_GUARD_CONVERSATIONS},
        model: {type: "string"},
        policy: {},
        mode: {type: "string", enum: ["score", "generate"]},
        targets: {type: "string", enum: ["both", "last"]},
        tokens: {type: "boolean"}
    }
} as const;

const verdictSchema = {anyOf: [{type: "null"}, {type: "object", additionalProperties: true}]} as const;

const guardReply = resultsReply({
    type: "object",
    required: ["flagged", "prompt", "response"],
    properties: {flagged: {type: "boolean"}, prompt: verdictSchema, response: verdictSchema}
});

interface GuardBody {
    messages?: unknown[],
    prompt?: string,
    response?: string,
    conversations?: unknown[],
    model?: string,
    policy?: unknown,
    mode?: "score" | "generate",
    targets?: "both" | "last",
    tokens?: boolean
}

/**
 * `POST /v1/guard`: the native judgement of one conversation (`messages`, or `prompt` and `response`) or of many
 * (`conversations`, each in either form): the prompt verdict (the last user message) and, when an assistant message
 * follows it, the response verdict with its refusal (Gen) or where a stream would have stopped (Stream); `targets:
 * "last"` judges only the last message. `tokens: true` adds every response token's verdict (Stream).
 */
export async function guardRoutes(app: FastifyInstance): Promise<void> {
    const state = app.qwenguard;
    app.post("/v1/guard", {schema: {body: guardBody, response: {200: guardReply}}}, async (request, reply) => {
        assertReady(state);
        const body = request.body as GuardBody;
        const model = requestedModel(state.service, body.model);
        const policy = requestPolicy(state, body.policy);
        const conversations = conversationsOf(body);
        if (body.tokens === true && model.variant !== "stream")
            throw ApiError.invalid('"tokens" gives per-token verdicts of a Stream model, and the model is a Gen model', "tokens");
        if (body.tokens === true && body.conversations != null)
            throw ApiError.invalid('"tokens" gives per-token verdicts of one conversation: send "messages", not "conversations"', "tokens");
        const signal = clientGone(reply);
        const results = await judgeAll(conversations, model, (messages) =>
            state.service.judge(model, messages, policy, body.mode ?? state.options.mode, body.targets ?? "both", body.tokens === true, signal));
        return {id: responseId("guard"), model: model.id, results};
    });
}

/** The conversations a request gives, each checked (a 400 naming the one that is wrong). */
function conversationsOf(body: GuardBody): Message[][] {
    const single = ["messages", "prompt", "response"].filter((key) => key in body);
    if (body.conversations != null) {
        if (single.length > 0)
            throw ApiError.invalid(`Expected either "conversations" or one conversation ("messages", or "prompt" and "response") but received both`, "conversations");
        return body.conversations.map((conversation, index) => checked(`conversations[${index}]`, () => lastIsJudged(conversationOf(conversation))));
    }
    if (single.length === 0)
        throw ApiError.invalid('Expected "messages" (or "prompt" and "response", or "conversations") in the request body', "messages");
    return [checked(single[0], () => lastIsJudged(conversationOf(body)))];
}

/** The judged message is the last one: it must be a user prompt or an assistant response. */
function lastIsJudged(messages: Message[]): Message[] {
    const last = messages[messages.length - 1];
    if (last.role === "system")
        throw new TypeError('Expected the conversation to end with a user message (prompt) or an assistant message (response) but it ends with a system message');
    return messages;
}
