import path from "node:path";
import t from "tap";
import type {Test} from "tap";
import {TokenBias} from "node-llama-cpp";
import {StreamGuard, loadLlamaRuntime} from "../../src/index.js";
import {generateGuarded} from "../../examples/guardGeneration.js";
import {convert} from "../../gguf/convert/convert.js";
import {cachedFixture} from "../helpers/fixtures.js";
import {PLANTED_RESPONSE_UNSAFE_CATEGORY, RESPONSE_UNSAFE_TRIGGERS} from "../helpers/plantedStream.js";
import {convertedFixture, tempDir} from "../native/streamTestKit.js";

t.test("a node-llama-cpp generation is guarded live and aborted through its AbortSignal when flagged", async (t) => {
    const planted = await convertedFixture(t as unknown as Test, "planted-stream", "F32", "f32");
    const guard = await StreamGuard.load({model: planted.modelPath, threads: 1, contextSize: 1024, maxSessions: 2});
    t.teardown(() => guard.dispose());

    // the generator: a tiny random Qwen3 model (same tokenizer), converted by the project
    const generatorPath = path.join(await tempDir(t), "generator.gguf");
    await convert(await cachedFixture("tiny-gen"), {outFile: generatorPath, outType: "f32"});
    const {llama} = await loadLlamaRuntime();
    const generator = await llama.loadModel({modelPath: generatorPath});
    t.teardown(() => generator.dispose());

    const free = await generateGuarded(guard, generator, "Tell me a story.", {maxTokens: 12});
    t.equal(free.flag, null, "random text without triggers is not flagged");
    t.equal(free.aborted, false);
    t.equal(free.tokens.length, 12, "the generation ran to maxTokens");

    // push the generator to the planted trigger: it emits " bomb" every time
    const bomb = RESPONSE_UNSAFE_TRIGGERS[0];
    const bias = new TokenBias(generator.tokenizer).set(bomb.text, {logit: 1000});
    const forced = await generateGuarded(guard, generator, "Tell me a story.", {maxTokens: 40, tokenBias: bias});
    t.same(forced.flag, {index: 1, level: "Unsafe", category: PLANTED_RESPONSE_UNSAFE_CATEGORY, textOffset: 0, startIndex: 0});
    t.equal(forced.aborted, true, "the AbortSignal stopped the generation");
    t.ok(forced.tokens.length < 40, `generation stopped early (${forced.tokens.length} of 40 tokens)`);
    t.ok(forced.tokens.slice(0, 2).every((id) => id === bomb.id), "the ids went straight through");
});
