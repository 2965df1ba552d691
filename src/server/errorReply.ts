import type {FastifyError} from "fastify";
import {ContextLimitError} from "../conversation/ContextLimitError.js";
import {QueueFullError} from "../concurrency/AdmissionQueue.js";
import {ApiError, ClientClosedError} from "./ApiError.js";

/** Seconds a client is told to wait (`Retry-After`) when a model is busy. */
export const RETRY_AFTER_SECONDS = 1;

/**
 * The {@link ApiError} for any error a request ran into, so that every failure has OpenAI's error shape: schema
 * violations, unreadable or oversized bodies, a full queue or context, bad conversations and options (the library's
 * TypeErrors, whose messages say what was expected), input over the context; anything else is the server's fault (500).
 * @returns the error to send, and whether it is the server's fault (worth logging)
 */
export function apiErrorOf(error: unknown): {apiError: ApiError, serverFault: boolean} {
    if (error instanceof ApiError)
        return {apiError: error, serverFault: error.statusCode === 500};
    if (error instanceof ClientClosedError) // nginx's "client closed request": nobody reads it, the logs and metrics do
        return {apiError: new ApiError(499, error.message, "invalid_request_error", "client_closed"), serverFault: false};
    if (error instanceof QueueFullError)
        return {apiError: new ApiError(429, error.message, "rate_limit_error", "queue_full", null, {"retry-after": String(RETRY_AFTER_SECONDS)}), serverFault: false};
    if (error instanceof ContextLimitError)
        return {apiError: ApiError.invalid(error.message, null, "context_length_exceeded"), serverFault: false};
    if (error instanceof Error && error.message.startsWith("The context is full"))
        return {apiError: new ApiError(429, `The Stream model's shared context is full with other sessions: ${error.message}`,
            "rate_limit_error", "context_full", null, {"retry-after": String(RETRY_AFTER_SECONDS)}), serverFault: false};
    if (error instanceof TypeError && /^(Expected|The conversation)/.test(error.message))
        return {apiError: ApiError.invalid(error.message), serverFault: false};
    const fastifyError = error as Partial<FastifyError>;
    if (fastifyError.validation != null) {
        const [first] = fastifyError.validation;
        const path = first?.instancePath ?? "";
        const where = `${fastifyError.validationContext ?? "body"}${path}`.replace(/\//g, ".");
        const missing = (first?.params as {missingProperty?: string} | undefined)?.missingProperty;
        const param = missing ?? path.replace(/^\//, "").replace(/\//g, ".");
        // the branches of an anyOf each report their own type: say them together
        const types = fastifyError.validation.filter((item) => item.instancePath === path && item.keyword === "type")
            .map((item) => (item.params as {type?: string}).type);
        const problem = types.length > 1 ? `must be ${types.join(" or ")}` : first?.message ?? "is not valid";
        const message = missing != null ? `Expected "${missing}" in the request ${where}, but it is missing` : `Invalid ${where}: it ${problem}`;
        return {apiError: ApiError.invalid(message, param.length > 0 ? param : null), serverFault: false};
    }
    const status = fastifyError.statusCode;
    if (status === 413)
        return {apiError: new ApiError(413, `The request body is over the server's limit (${fastifyError.message})`, "invalid_request_error", "request_too_large"), serverFault: false};
    if (status === 415)
        return {apiError: new ApiError(415, `${fastifyError.message}: send application/json`, "invalid_request_error", "unsupported_media_type"), serverFault: false};
    if (fastifyError.code === "FST_ERR_CTP_INVALID_JSON_BODY")
        return {apiError: ApiError.invalid("The request body is not valid JSON"), serverFault: false};
    if (fastifyError.code === "FST_ERR_CTP_EMPTY_JSON_BODY")
        return {apiError: ApiError.invalid("The request body is empty: expected a JSON object"), serverFault: false};
    if (status != null && status >= 400 && status < 500)
        return {apiError: new ApiError(status, fastifyError.message ?? "Bad request", "invalid_request_error"), serverFault: false};
    return {apiError: new ApiError(500, `The server failed: ${error instanceof Error ? error.message : String(error)}`, "server_error"), serverFault: true};
}
