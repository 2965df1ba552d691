import {Counter, Gauge, Histogram, Registry, collectDefaultMetrics} from "prom-client";

/**
 * The server's Prometheus metrics, in a registry of its own (two servers in one process do not share counters).
 * Names follow Prometheus conventions: `_total` counters, `_seconds` histograms.
 */
export class ServerMetrics {
    readonly registry = new Registry();
    /** Requests by route (the route's URL pattern), method and status code. */
    readonly requests = new Counter({
        name: "qwenguard_http_requests_total", help: "HTTP requests answered, by route, method and status code",
        labelNames: ["route", "method", "status"] as const, registers: [this.registry]
    });
    readonly latency = new Histogram({
        name: "qwenguard_http_request_duration_seconds", help: "Time to answer an HTTP request (to the last byte of a streamed answer), by route",
        labelNames: ["route"] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [this.registry]
    });
    /** Judgements waiting for a model, by model variant. */
    readonly queueDepth = new Gauge({
        name: "qwenguard_queue_depth", help: "Judgements and stream sessions waiting for a model slot, by model",
        labelNames: ["model"] as const, registers: [this.registry]
    });
    /** Judgements and sessions holding a model slot, by model variant. */
    readonly active = new Gauge({
        name: "qwenguard_active", help: "Judgements and stream sessions holding a model slot, by model",
        labelNames: ["model"] as const, registers: [this.registry]
    });
    readonly rejected = new Counter({
        name: "qwenguard_rejected_total", help: "Work refused because a model's queue was full, by model",
        labelNames: ["model"] as const, registers: [this.registry]
    });
    /** Live moderation sessions (WebSocket and proxied streams) open now. */
    readonly streamSessions = new Gauge({
        name: "qwenguard_stream_sessions_open", help: "Live stream moderation sessions open (WebSocket and proxied streams)",
        labelNames: ["kind"] as const, registers: [this.registry]
    });
    readonly tokens = new Counter({
        name: "qwenguard_tokens_judged_total", help: "Tokens the models read (rendered conversations and response tokens), by model",
        labelNames: ["model"] as const, registers: [this.registry]
    });
    readonly judgements = new Counter({
        name: "qwenguard_judgements_total", help: "Verdicts given, by model and target (prompt or response)",
        labelNames: ["model", "target"] as const, registers: [this.registry]
    });
    readonly flags = new Counter({
        name: "qwenguard_flags_total", help: "Flagged verdicts, by model, target, level and category",
        labelNames: ["model", "target", "level", "category"] as const, registers: [this.registry]
    });

    constructor() {
        collectDefaultMetrics({register: this.registry, prefix: "qwenguard_"});
    }

    /** Counts a verdict (and its flag). */
    verdict(model: string, target: "prompt" | "response", flagged: boolean, level: string, category: string | null): void {
        this.judgements.inc({model, target});
        if (flagged)
            this.flags.inc({model, target, level, category: category ?? "none"});
    }
}
