import type {FastifyInstance} from "fastify";
import {fetchUpstreamModels} from "../upstream.js";

const healthReply = {
    type: "object",
    required: ["status"],
    properties: {
        status: {type: "string", enum: ["ok", "loading", "error", "closing"]},
        error: {type: "string"},
        models: {type: "array", items: {type: "object", properties: {id: {type: "string"}, variant: {type: "string"}}}}
    }
} as const;

const modelsReply = {
    type: "object",
    required: ["object", "data"],
    properties: {
        object: {type: "string"},
        data: {type: "array", items: {type: "object", additionalProperties: true}}
    }
} as const;

/** What the server offers its operators: `/health`, `/v1/models`, `/metrics` (Prometheus). */
export async function operatorRoutes(app: FastifyInstance): Promise<void> {
    const {service, metrics, options} = app.qwenguard;
    const created = Math.floor(Date.now() / 1000);

    app.get("/health", {schema: {response: {200: healthReply, 503: healthReply}}}, async (_request, reply) => {
        if (app.qwenguard.closing)
            return reply.code(503).send({status: "closing"});
        if (service.state === "loading" || service.state === "closed")
            return reply.code(503).send({status: service.state === "loading" ? "loading" : "closing"});
        if (service.state === "failed")
            return reply.code(503).send({status: "error", error: service.loadError?.message ?? "the models could not be loaded"});
        return {status: "ok", models: service.models.map(({id, variant}) => ({id, variant}))};
    });

    // the guard's models, then (behind the proxy) the upstream's, so that chat clients listing models find both
    app.get("/v1/models", {schema: {response: {200: modelsReply}}}, async (request) => {
        const own = service.models.map(({id, variant}) => ({id, object: "model", created, owned_by: "qwenguard", qwen3guard: {variant}}));
        const upstream = options.upstream != null ? await fetchUpstreamModels(options, request.headers.authorization) : [];
        return {object: "list", data: [...own, ...upstream]};
    });

    app.get("/metrics", async (_request, reply) => {
        return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
    });
}
