import {randomBytes} from "node:crypto";
import type {FastifyReply} from "fastify";
import {mapInOrder} from "../../moderation/mapInOrder.js";
import type {GenGuard} from "../../gen/GenGuard.js";
import type {StreamGuard} from "../../stream/StreamGuard.js";
import {ApiError, ClientClosedError} from "../ApiError.js";
import type {GuardService, ServedModel} from "../GuardService.js";
import type {QwenguardState} from "../qwenguardPlugin.js";
import {resolveServerPolicy} from "../serverPolicy.js";
import type {ResolvedServerPolicy} from "../serverPolicy.js";

/** OpenAI's own moderation model names: clients written for OpenAI send them; they mean the server's default model. */
const OPENAI_MODERATION_MODELS = /^(omni|text)-moderation-/;

/** A 503 unless the models are loaded (`/health` says the same). */
export function assertReady(state: QwenguardState): void {
    const {service} = state;
    if (state.closing || service.state === "closed")
        throw new ApiError(503, "The server is shutting down", "unavailable_error", "shutting_down");
    if (service.state === "loading")
        throw new ApiError(503, "The models are still loading: retry once /health answers 200", "unavailable_error", "loading", null, {"retry-after": "1"});
    if (service.state === "failed")
        throw new ApiError(503, `The models could not be loaded: ${service.loadError?.message}`, "unavailable_error", "load_failed");
}

/**
 * The model a request names (its id, `gen` or `stream`, or one of OpenAI's moderation model names for the
 * default), else the default.
 * @throws ApiError 404 (`model_not_found`) naming the models there are
 */
export function requestedModel(service: GuardService, name: unknown, prefer: "gen" | "stream" = "gen"): ServedModel<GenGuard> | ServedModel<StreamGuard> {
    if (name != null && typeof name !== "string")
        throw ApiError.invalid(`Expected a string for "model" but received ${typeof name}`, "model");
    const wanted = name == null || OPENAI_MODERATION_MODELS.test(name) ? undefined : name;
    const model = service.find(wanted, prefer);
    if (model == null)
        throw new ApiError(404, `The model ${JSON.stringify(name)} is not served here: the models are ${service.models.map(({id}) => JSON.stringify(id)).join(", ")} ` +
            '(or "gen" / "stream" for the loaded model of that variant)', "invalid_request_error", "model_not_found", "model");
    return model;
}

/** A request's policy, or the server's default, checked (a 400 naming "policy"). */
export function requestPolicy(state: QwenguardState, policy: unknown, param = "policy"): ResolvedServerPolicy {
    if (policy === undefined)
        return state.options.policy;
    try {
        return resolveServerPolicy(policy);
    } catch (error) {
        throw ApiError.invalid((error as Error).message, param);
    }
}

/** Runs request validation: its TypeErrors become 400s naming the field. */
export function checked<T>(param: string | null, check: () => T): T {
    try {
        return check();
    } catch (error) {
        if (error instanceof TypeError)
            throw ApiError.invalid(error.message, param);
        throw error;
    }
}

/** Aborts when the client goes away before the reply is complete (work still queued for it can then be dropped). */
export function clientGone(reply: FastifyReply): AbortSignal {
    const controller = new AbortController();
    reply.raw.on("close", () => {
        if (!reply.raw.writableFinished)
            controller.abort(new ClientClosedError());
    });
    return controller.signal;
}

/** An id in OpenAI's style: a prefix and 24 random hex digits. */
export function responseId(prefix: string): string {
    return `${prefix}-${randomBytes(12).toString("hex")}`;
}

/** The reply schema of a judgement route: `{id, model, results: [item]}`. */
export function resultsReply(item: object) {
    return {
        type: "object",
        required: ["id", "model", "results"],
        properties: {id: {type: "string"}, model: {type: "string"}, results: {type: "array", items: item}}
    } as const;
}

/**
 * Judges every item of a request, in order, at most as many at once as the model has slots (so that one request never
 * fills the model's queue on its own); the first failure fails the request, once the work in flight has ended.
 */
export async function judgeAll<T, R>(items: readonly T[], model: ServedModel<unknown>, judge: (item: T) => Promise<R>): Promise<R[]> {
    const results: R[] = [];
    for await (const result of mapInOrder(items, model.queue.slots, judge))
        results.push(result);
    return results;
}
