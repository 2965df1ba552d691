import ajvCompiler from "@fastify/ajv-compiler";
import websocket from "@fastify/websocket";
import type {FastifyInstance, FastifyPluginAsync} from "fastify";
import {ApiError} from "./ApiError.js";
import {bearerKeyCheck} from "./apiKey.js";
import {apiErrorOf} from "./errorReply.js";
import {GuardService} from "./GuardService.js";
import {ServerMetrics} from "./ServerMetrics.js";
import {resolveServerOptions} from "./serverOptions.js";
import type {QwenguardServerOptions, ResolvedServerOptions} from "./serverOptions.js";
import {chatProxyRoutes} from "./routes/chatProxyRoutes.js";
import {guardRoutes} from "./routes/guardRoutes.js";
import {guardStreamRoutes} from "./routes/guardStreamRoutes.js";
import {moderationRoutes} from "./routes/moderationRoutes.js";
import {operatorRoutes} from "./routes/operatorRoutes.js";

/** A live session the server must end when it closes (WebSocket sessions say so to their clients). */
export interface LiveSession {
    /** Ends the session for a server shutdown: a last event to the client, then its resources are freed. */
    shutdown(): Promise<void>
}

/** What the plugin shares with its routes (the `qwenguard` decorator). */
export interface QwenguardState {
    service: GuardService,
    metrics: ServerMetrics,
    options: ResolvedServerOptions,
    /** Open live sessions. */
    sessions: Set<LiveSession>,
    /** True once the server is closing: new sessions are refused. */
    closing: boolean,
    /** Most bytes a live session's client may have sent that are not judged yet (the body limit). */
    maxPendingBytes: number
}

declare module "fastify" {
    interface FastifyInstance {
        qwenguard: QwenguardState
    }
}

/** fastify's default body limit (1 MiB), which the server keeps unless told otherwise. */
export const DEFAULT_BODY_LIMIT = 1 << 20;

/** How long after the grace period the connections still open are closed: time for the sessions' last events. */
const CLOSE_MARGIN_MS = 2000;

/** Routes that answer without the API key: a load balancer's health probe has none. */
const OPEN_ROUTES = new Set(["/health"]);

/**
 * The qwenguard server as a fastify plugin: `/v1/moderations`, `/v1/guard`, `/v1/guard/stream` (WebSocket), the guard
 * proxy `/v1/chat/completions` (with `upstream`), `/health`, `/v1/models` and `/metrics`, under the prefix it is
 * registered with. Everything lives in the plugin's own context (nothing global): its models load in the background
 * when it registers, and are freed when the fastify instance closes.
 * @example
 * const app = Fastify();
 * await app.register(qwenguardPlugin, {prefix: "/guard", models: ["gen-0.6b.gguf"]});
 * await app.listen({port: 3000});
 */
export const qwenguardPlugin: FastifyPluginAsync<QwenguardServerOptions> = async (app: FastifyInstance, options: QwenguardServerOptions) => {
    const resolved = resolveServerOptions(options);
    const metrics = new ServerMetrics();
    const state: QwenguardState = {
        service: new GuardService({...options, maxQueue: resolved.maxQueue, maxSessionTokens: resolved.maxSessionTokens,
            cacheTypeK: resolved.cacheTypeK, cacheTypeV: resolved.cacheTypeV}, metrics),
        metrics, options: resolved, sessions: new Set(), closing: false, maxPendingBytes: app.initialConfig.bodyLimit ?? DEFAULT_BODY_LIMIT
    };
    app.decorate("qwenguard", state);

    let graceOver: NodeJS.Timeout | undefined;
    let ending: Promise<unknown> | null = null;
    // (two preClose hooks call it: this plugin's and the WebSocket plugin's, which must not close sockets before it is done)
    const endSessions = async () => {
        if (ending == null) {
            state.closing = true;
            // live sessions are told to end when the grace period is over; connections still open a moment after that
            // (time for those last events) are cut, so that close() always ends
            graceOver = setTimeout(() => app.server.closeAllConnections(), resolved.shutdownGrace + CLOSE_MARGIN_MS).unref();
            ending = Promise.allSettled([...state.sessions].map((session) => session.shutdown()));
        }
        await ending;
    };
    app.addHook("preClose", endSessions);
    app.addHook("onClose", async () => {
        clearTimeout(graceOver);
        await state.service.close(resolved.shutdownGrace);
    });

    // first, so that its hooks see every upgrade request, also one the API key check below refuses (whose socket it
    // then closes: a refused upgrade must not keep its connection, nor hold up the server's close)
    if (!app.hasDecorator("websocketServer")) {
        await app.register(websocket, {
            options: {maxPayload: state.maxPendingBytes},
            // the plugin's own preClose would close every socket at once: the sessions first say why and how far they got
            preClose: async () => {
                await endSessions();
                for (const client of app.websocketServer.clients)
                    client.close(1001, "server shutting down");
                await new Promise((resolve) => app.websocketServer.close(resolve));
            }
        });
    }
    // the API speaks JSON only: a text/plain body is a 415, not a string that fails validation later
    app.removeContentTypeParser("text/plain");
    // fastify's default validator coerces types (3 becomes "3") and drops unknown fields: a guard refuses them instead
    app.setValidatorCompiler(ajvCompiler()({}, {customOptions: {coerceTypes: false, removeAdditional: false, useDefaults: false}}));
    app.setErrorHandler((error, request, reply) => {
        const {apiError, serverFault} = apiErrorOf(error);
        if (serverFault)
            request.log.error({err: error}, "request failed");
        void reply.code(apiError.statusCode).headers(apiError.headers).send(apiError.body());
    });
    app.setNotFoundHandler((request, reply) => {
        void reply.code(404).send(new ApiError(404, `Unknown route ${request.method} ${request.url}`, "invalid_request_error", "not_found").body());
    });

    if (resolved.apiKey != null) {
        const hasKey = bearerKeyCheck(resolved.apiKey);
        app.addHook("onRequest", async (request) => {
            if (OPEN_ROUTES.has(request.routeOptions.url?.slice(app.prefix.length) ?? ""))
                return;
            if (request.headers.authorization == null)
                throw new ApiError(401, "You didn't provide an API key: send it in an Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY)",
                    "invalid_request_error", "invalid_api_key");
            if (!hasKey(request.headers.authorization))
                throw new ApiError(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key");
        });
    }
    // an answer finished while the server closes ends its keep-alive connection, which would otherwise hold close() up
    app.addHook("onSend", async (_request, reply, payload) => {
        if (state.closing)
            void reply.header("connection", "close");
        return payload;
    });
    app.addHook("onResponse", async (request, reply) => {
        if (state.closing)
            request.raw.socket?.end(); // a keep-alive connection whose answer ended during close would hold close() up
        const route = request.routeOptions.url ?? "unmatched";
        metrics.requests.inc({route, method: request.method, status: String(reply.statusCode)});
        metrics.latency.observe({route}, reply.elapsedTime / 1000);
    });

    await app.register(operatorRoutes);
    await app.register(moderationRoutes);
    await app.register(guardRoutes);
    await app.register(guardStreamRoutes);
    if (resolved.upstream != null)
        await app.register(chatProxyRoutes);
};
