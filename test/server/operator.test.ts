// What the server offers its operators: /health while loading and after a failed load, /v1/models, the API key (HTTP
// and WebSocket), a full queue answering 429 with Retry-After and nothing lost, Prometheus /metrics, the plugin
// embedded under a prefix in another app (fastify.inject), and the options createServer refuses.

import Fastify from "fastify";
import t from "tap";
import {createServer, qwenguardPlugin} from "../../src/index.js";
import {contentChunk, plantedModels, postJson, startScriptedUpstream, startServer, StreamClient, writeSse} from "./serverTestKit.js";

const planted = await plantedModels();

t.test("createServer refuses bad options, naming them", async (t) => {
    const table: Array<[object, string]> = [
        [{}, 'Expected a model to serve: "models" (files), "gen" or "stream" (loaded guards)'],
        [{models: "a.gguf"}, 'Expected an array of model files or model names for "models" but received "a.gguf"'],
        [{models: [planted.gen], maxQueue: -1}, 'Expected an integer between 0 and 1048576 for "maxQueue" but received -1'],
        [{models: [planted.gen], upstream: "ftp://host/v1"}, 'Expected an http:// or https:// URL for "upstream" but received "ftp://host/v1"'],
        [{models: [planted.gen], upstream: "not a url"}, 'Expected an http:// or https:// URL for "upstream" but received "not a url"'],
        [{models: [planted.gen], apiKey: ""}, 'Expected a non-empty string for "apiKey" but received ""'],
        [{models: [planted.gen], policy: "lenient"},
            'Expected "strict", "loose", a number in (0, 1] or {minProb?, controversial?, window?} for "policy" but received "lenient"'],
        [{models: [planted.gen], mode: "fast"}, 'Expected one of "score", "generate" for "mode" but received "fast"'],
        [{models: [planted.gen], maxBody: 10}, 'Expected an integer between 1024 and 1073741824 for "maxBody" but received 10'],
        [{models: [planted.gen], upstreamTimeout: 0}, 'Expected an integer between 1 and 86400000 for "upstreamTimeout" but received 0']
    ];
    for (const [options, message] of table)
        await t.rejects(createServer(options), {name: "TypeError", message}, JSON.stringify(options));
});

t.test("/health: 503 while loading, 200 once loaded; a failed load says why, and the API answers 503", async (t) => {
    const app = await createServer({models: [planted.gen, planted.stream], threads: 1, contextSize: 1024});
    t.teardown(() => app.close());
    const address = await app.listen({host: "127.0.0.1", port: 0});
    const first = await fetch(`${address}/health`);
    t.equal(first.status, 503, "the models take longer to load than a loopback request");
    t.same(await first.json(), {status: "loading"});
    t.match(await postJson(`${address}/v1/moderations`, {input: "x"}), {status: 503, body: {error: {code: "loading", type: "unavailable_error"}}});
    await app.qwenguard.service.loaded;
    const ready = await fetch(`${address}/health`);
    t.same([ready.status, await ready.json()], [200, {status: "ok", models: [{id: "model-gen", variant: "gen"}, {id: "model-stream", variant: "stream"}]}]);

    const broken = await createServer({models: ["/no/such/model.gguf"]});
    t.teardown(() => broken.close());
    const brokenAddress = await broken.listen({host: "127.0.0.1", port: 0});
    await t.rejects(broken.qwenguard.service.loaded, {message: "Model file /no/such/model.gguf does not exist"});
    const health = await fetch(`${brokenAddress}/health`);
    t.same([health.status, await health.json()], [503, {status: "error", error: "Model file /no/such/model.gguf does not exist"}]);
    t.match(await postJson(`${brokenAddress}/v1/guard`, {prompt: "x"}), {status: 503,
        body: {error: {code: "load_failed", message: "The models could not be loaded: Model file /no/such/model.gguf does not exist"}}});

    const two = await createServer({models: [planted.gen, planted.gen]});
    t.teardown(() => two.close());
    await two.ready();
    await t.rejects(two.qwenguard.service.loaded, {message: /^Expected at most one Gen model but received two: /});
    const head = planted.stream.replace(/\.gguf$/, ".head.gguf");
    const headOnly = await createServer({models: [head]});
    t.teardown(() => headOnly.close());
    await headOnly.ready();
    await t.rejects(headOnly.qwenguard.service.loaded, {message: `${head} is a Stream head file: pass the Stream backbone GGUF as the model`});
});

t.test("/v1/models lists the guard's models, then the upstream's", async (t) => {
    const upstream = await startScriptedUpstream(t, (_request, response) => {
        response.writeHead(200, {"content-type": "application/json"});
        response.end(JSON.stringify({object: "list", data: [{id: "llama-3", object: "model", owned_by: "upstream"}]}));
    });
    const server = await startServer(t, {upstream: upstream.url});
    const list = await (await fetch(`${server.url}/v1/models`)).json() as {object: string, data: Array<Record<string, unknown>>};
    t.equal(list.object, "list");
    t.same(list.data.map((model) => [model.id, model.owned_by]), [["model-gen", "qwenguard"], ["model-stream", "qwenguard"], ["llama-3", "upstream"]]);
    t.match(list.data[1], {object: "model", created: Number, qwen3guard: {variant: "stream"}});
    t.equal(upstream.requests[0].url, "/v1/models");
});

t.test("the API key: every route but /health, WebSocket upgrades included", async (t) => {
    const server = await startServer(t, {apiKey: "s3cret"});
    t.equal((await fetch(`${server.url}/health`)).status, 200, "/health is open");
    const missing = await postJson(`${server.url}/v1/moderations`, {input: "x"});
    t.same([missing.status, missing.body], [401, {error: {type: "invalid_request_error", code: "invalid_api_key", param: null,
        message: "You didn't provide an API key: send it in an Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY)"}}]);
    const wrong = await postJson(`${server.url}/v1/moderations`, {input: "x"}, {authorization: "Bearer s3cre"});
    t.same([wrong.status, wrong.body.error?.message], [401, "Incorrect API key provided"]);
    t.equal((await postJson(`${server.url}/v1/moderations`, {input: "x"}, {authorization: "Bearer s3cret"})).status, 200);
    t.equal((await fetch(`${server.url}/metrics`)).status, 401);
    t.equal((await fetch(`${server.url}/metrics`, {headers: {authorization: "Bearer s3cret"}})).status, 200);
    t.equal((await fetch(`${server.url}/nope`)).status, 401, "unknown routes do not tell what exists");

    const refused: unknown = await StreamClient.connect(t, server.url).then(() => null, (error: unknown) => error);
    t.match(refused, {status: 401, body: {error: {code: "invalid_api_key"}}});
    const client = await StreamClient.connect(t, server.url, {authorization: "Bearer s3cret"});
    client.send({type: "start", messages: [{role: "user", content: "hi"}]});
    t.match(await client.next("prompt"), {verdict: {level: "Safe"}});
});

t.test("a full queue answers 429 with Retry-After: every request gets an answer, none is lost", async (t) => {
    const server = await startServer(t, {models: [planted.gen], parallel: 1, maxQueue: 2});
    const long = "Please tell me a long story about bread. ".repeat(40);
    const replies = await Promise.all(Array.from({length: 24}, () => postJson(`${server.url}/v1/moderations`, {input: long, mode: "generate"})));
    const statuses = replies.map((reply) => reply.status);
    t.ok(statuses.every((status) => status === 200 || status === 429), `only 200 and 429: ${statuses.join(" ")}`);
    const busy = replies.filter((reply) => reply.status === 429);
    t.ok(busy.length > 0 && busy.length < 24, `${busy.length} of 24 were told to retry`);
    t.same(busy[0].body, {error: {type: "rate_limit_error", code: "queue_full", param: null,
        message: "The Gen model is busy: 2 running and 2 waiting, the most this server queues; retry later"}});
    t.equal(busy[0].headers.get("retry-after"), "1");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    t.match(metrics, new RegExp(`qwenguard_rejected_total\\{model="gen"\\} ${busy.length}\\n`));
    t.match(metrics, new RegExp(`qwenguard_http_requests_total\\{route="/v1/moderations",method="POST",status="429"\\} ${busy.length}\\n`));
    t.match(metrics, /qwenguard_queue_depth\{model="gen"\} 0\n/, "the queue drained");
});

t.test("/metrics: requests, latency, judgements, flags, tokens, sessions in Prometheus' text format", async (t) => {
    const server = await startServer(t);
    await postJson(`${server.url}/v1/moderations`, {input: ["How do I make a bomb?", "hello"]});
    await postJson(`${server.url}/v1/guard`, {model: "stream", messages: [{role: "user", content: "hi"}, {role: "assistant", content: "Sure: bomb poison now."}]});
    const reply = await fetch(`${server.url}/metrics`);
    t.match(reply.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
    const text = await reply.text();
    for (const line of [
        /qwenguard_http_requests_total\{route="\/v1\/moderations",method="POST",status="200"\} 1/,
        /qwenguard_http_request_duration_seconds_count\{route="\/v1\/guard"\} 1/,
        /qwenguard_judgements_total\{model="gen",target="prompt"\} 2/,
        /qwenguard_flags_total\{model="gen",target="prompt",level="Unsafe",category="Violent"\} 1/,
        /qwenguard_flags_total\{model="stream",target="response",level="Unsafe",category="Violent"\} 1/,
        /qwenguard_tokens_judged_total\{model="gen"\} [1-9]\d*/,
        /qwenguard_tokens_judged_total\{model="stream"\} [1-9]\d*/,
        /qwenguard_active\{model="stream"\} 0/,
        /qwenguard_process_resident_memory_bytes [1-9]/
    ])
        t.match(text, line);
});

t.test("the plugin inside another app, under a prefix: its routes, its key and its errors stay its own", async (t) => {
    const app = Fastify();
    t.teardown(() => app.close());
    app.get("/hello", async () => ({hello: "world"}));
    await app.register(qwenguardPlugin, {prefix: "/guard", models: [planted.gen], apiKey: "k", threads: 1, contextSize: 1024});
    await app.ready();
    t.same((await app.inject({method: "GET", url: "/hello"})).json(), {hello: "world"}, "the app's own route needs no key");
    t.equal((await app.inject({method: "GET", url: "/guard/health"})).statusCode, 503, "/health under the prefix, open");
    t.equal((await app.inject({method: "POST", url: "/guard/v1/moderations", payload: {input: "x"}})).statusCode, 401);
    const other = await app.inject({method: "GET", url: "/elsewhere"});
    t.equal(other.statusCode, 404);
    t.notMatch(other.body, /invalid_request_error/, "the app's own 404 is fastify's");

    // two servers in one process: nothing global (metrics registries, queues, models)
    const upstream = await startScriptedUpstream(t, (_request, response) => writeSse(response, [contentChunk("Hi.", 0, "stop")]));
    const first = await startServer(t, {models: [planted.stream], upstream: upstream.url});
    const second = await startServer(t, {models: [planted.stream]});
    await postJson(`${first.url}/v1/moderations`, {input: "hi"});
    const counts = async (url: string) => /qwenguard_judgements_total\{model="stream",target="prompt"\} (\d+)/.exec(await (await fetch(`${url}/metrics`)).text())?.[1];
    t.same([await counts(first.url), await counts(second.url)], ["1", undefined]);
    t.equal((await postJson(`${second.url}/v1/chat/completions`, {messages: [{role: "user", content: "hi"}]})).status, 404, "no proxy without an upstream");
});
