import type {FastifyInstance} from "fastify";
import {describeValue} from "../../conversation/messages.js";
import {contentText} from "../../openai/chatMessages.js";
import {ApiError} from "../ApiError.js";
import {OPENAI_MODERATION_CATEGORIES, openAiCategoryFields} from "../openaiCategories.js";
import {assertReady, checked, clientGone, judgeAll, requestPolicy, requestedModel, responseId, resultsReply} from "./routeKit.js";

/** Most texts one request may judge. */
export const MAX_MODERATION_INPUTS = 1024;

const categoryKeys = Object.fromEntries(OPENAI_MODERATION_CATEGORIES.map((key) => [key, {type: "boolean"}]));
const scoreKeys = Object.fromEntries(OPENAI_MODERATION_CATEGORIES.map((key) => [key, {type: "number"}]));
const appliedKeys = Object.fromEntries(OPENAI_MODERATION_CATEGORIES.map((key) => [key, {type: "array", items: {type: "string"}}]));

const moderationBody = {
    type: "object",
    required: ["input"],
    properties: {
        input: {}, // a string, an array of strings or of content parts: checked by inputTexts, which can say which one is wrong
        model: {type: "string"},
        policy: {},
        mode: {type: "string", enum: ["score", "generate"]}
    }
} as const;

const moderationReply = resultsReply({
    type: "object",
    required: ["flagged", "categories", "category_scores", "category_applied_input_types"],
    properties: {
        flagged: {type: "boolean"},
        categories: {type: "object", properties: categoryKeys},
        category_scores: {type: "object", properties: scoreKeys},
        category_applied_input_types: {type: "object", properties: appliedKeys},
        qwen3guard: {type: "object", additionalProperties: true}
    }
});

interface ModerationBody {
    input: unknown,
    model?: string,
    policy?: unknown,
    mode?: "score" | "generate"
}

/**
 * `POST /v1/moderations`: OpenAI's moderation API. `input` is a string, an array of strings (a result each), or an
 * array of content parts (one result: their text, joined; an image part is refused, since only text is judged).
 * Each text is judged as a user prompt.
 */
export async function moderationRoutes(app: FastifyInstance): Promise<void> {
    const state = app.qwenguard;
    app.post("/v1/moderations", {schema: {body: moderationBody, response: {200: moderationReply}}}, async (request, reply) => {
        assertReady(state);
        const body = request.body as ModerationBody;
        const model = requestedModel(state.service, body.model);
        const policy = requestPolicy(state, body.policy);
        const texts = inputTexts(body.input);
        const signal = clientGone(reply);
        const results = await judgeAll(texts, model, (text) => state.service.judgePrompt(model, text, policy, body.mode ?? state.options.mode, signal));
        return {
            id: responseId("modr"),
            model: model.id,
            results: results.map((result) => ({flagged: result.flagged, ...openAiCategoryFields(result, policy.controversial), qwen3guard: result}))
        };
    });
}

/** The texts to judge: one per string, or one for an array of content parts. */
function inputTexts(input: unknown): string[] {
    if (typeof input === "string")
        return [input];
    if (!Array.isArray(input) || input.length === 0 || input.length > MAX_MODERATION_INPUTS)
        throw ApiError.invalid(`Expected a string, or an array of 1 to ${MAX_MODERATION_INPUTS} strings or content parts, for "input" but received ` +
            `${Array.isArray(input) ? `an array of ${input.length}` : describeValue(input)}`, "input");
    if (input.every((item) => typeof item === "string"))
        return input as string[];
    if (input.some((item) => typeof item === "string"))
        throw ApiError.invalid('Expected "input" to be an array of strings or an array of content parts, not a mix of both', "input");
    input.forEach((part, index) => {
        const type = (part as {type?: unknown} | null)?.type;
        if (type !== "text")
            throw ApiError.invalid(`Only text is judged: "input[${index}]" is ${typeof type === "string" ? `a ${JSON.stringify(type)} part` : "not a {type: \"text\", text} part"}`,
                `input[${index}]`);
    });
    return [checked("input", () => contentText(input, "input")!)];
}
