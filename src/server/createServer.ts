import Fastify from "fastify";
import fastifyPlugin from "fastify-plugin";
import type {FastifyInstance, FastifyServerOptions} from "fastify";
import {integerOption} from "../options.js";
import {DEFAULT_BODY_LIMIT, qwenguardPlugin} from "./qwenguardPlugin.js";
import {resolveServerOptions} from "./serverOptions.js";
import type {QwenguardServerOptions} from "./serverOptions.js";

/** Options of {@link createServer}: the plugin's, and the HTTP server's own. */
export interface CreateServerOptions extends QwenguardServerOptions {
    /** The largest request body and WebSocket message, in bytes (a larger one is a 413); default 1 MiB. */
    maxBody?: number,
    /** fastify's logger (pino) options; default: no logging. */
    logger?: FastifyServerOptions["logger"]
}

/**
 * The qwenguard server as a fastify instance, ready to `listen`: {@link qwenguardPlugin} at the root (its
 * `qwenguard` decorator and hooks are the server's), with a body limit. The models start loading when it starts (at `listen` or `ready`); `/health` answers 503 until they are
 * loaded (`server.qwenguard.service.loaded` settles then). `close()` stops accepting connections, ends live
 * sessions with a last event, lets the requests in flight finish (up to `shutdownGrace`) and frees the models.
 * @throws TypeError for a bad option, naming it
 * @example
 * const server = await createServer({models: ["gen-0.6b.gguf", "stream-0.6b.gguf"], upstream: "http://127.0.0.1:8081/v1"});
 * await server.listen({host: "127.0.0.1", port: 8080});
 * await server.qwenguard.service.loaded;
 */
export async function createServer(options: CreateServerOptions): Promise<FastifyInstance> {
    resolveServerOptions(options); // a bad option fails here, not at listen
    const bodyLimit = integerOption("maxBody", options.maxBody ?? DEFAULT_BODY_LIMIT, 1024, 1 << 30);
    const pluginOptions: QwenguardServerOptions = {...options};
    delete (pluginOptions as CreateServerOptions).maxBody;
    delete (pluginOptions as CreateServerOptions).logger;
    const app = Fastify({bodyLimit, logger: options.logger ?? false, return503OnClosing: true, forceCloseConnections: "idle"});
    // at the root, not encapsulated: the whole server is the guard's, and `server.qwenguard` is there for the caller
    // (a wrapper: fastify-plugin marks the function it is given, and qwenguardPlugin itself must stay encapsulated)
    const atRoot = fastifyPlugin<QwenguardServerOptions>((instance, opts) => qwenguardPlugin(instance, opts), {fastify: "5.x", name: "qwenguard"});
    await app.register(atRoot, pluginOptions);
    return app;
}
