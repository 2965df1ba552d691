/** The error body of OpenAI's API, which the server copies: `{error: {message, type, param, code}}`. */
export interface ApiErrorBody {
    error: {
        message: string,
        type: string,
        param: string | null,
        code: string | null
    }
}

/**
 * An error the server answers with a status and OpenAI's error body. The type follows OpenAI's habits:
 * `invalid_request_error` for what the client sent, `rate_limit_error` for a full queue, `server_error` for the
 * server's own faults, `upstream_error` for the proxied LLM server's.
 */
export class ApiError extends Error {
    override name = "ApiError";

    constructor(readonly statusCode: number, message: string, readonly type: string, readonly code: string | null = null,
        readonly param: string | null = null, readonly headers: Readonly<Record<string, string>> = {}) {
        super(message);
    }

    /** A 400 about the request: what was wrong and what was expected. */
    static invalid(message: string, param: string | null = null, code: string | null = null): ApiError {
        return new ApiError(400, message, "invalid_request_error", code, param);
    }

    /** The body to send. */
    body(): ApiErrorBody {
        return {error: {message: this.message, type: this.type, param: this.param, code: this.code}};
    }
}

/** The client went away before its answer was complete: nothing to answer, and not the server's fault. */
export class ClientClosedError extends Error {
    override name = "ClientClosedError";

    constructor(message = "The client closed the connection") {
        super(message);
    }
}
