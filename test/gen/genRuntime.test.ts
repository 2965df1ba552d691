// GenGuard's runtime: the template prefix evaluated once per target and shared (counted by llama.cpp's own timings
// and node-llama-cpp's token meters), parallel requests batched without mixing sequences, the KV budget, the candidate
// probabilities against llama.cpp's full distribution (random, planted, and an output matrix quantized unlike the
// embeddings), template warnings, malformed generated answers.

import path from "node:path";
import t from "tap";
import type {Test} from "tap";
import type {Token} from "node-llama-cpp";
import {GgmlType, readGguf} from "../../gguf/index.js";
import {GenGuard, MalformedAnswerError} from "../../src/index.js";
import type {GenVerdict, Message} from "../../src/index.js";
import {tokenizeSegments} from "../../src/conversation/TokenSegments.js";
import type {CandidateSet} from "../../src/gen/AnswerVocabulary.js";
import {loadLlamaRuntime} from "../../src/native/loadAddon.js";
import {quantizeModel} from "../../src/quantize/quantizeModel.js";
import {genInstructionsBefore, genPromptSegments} from "../../src/gen/genTemplate.js";
import type {GenTarget} from "../../src/gen/genTemplate.js";
import {cachedConvertedFixture, cachedPlantedGen} from "../helpers/plantedGen.js";
import {tempDir} from "../gguf/ggufTestKit.js";
import {SMALL_GEN, encode, loadPlantedGen, plantedAnswerTo} from "./genTestKit.js";

const tinyGen = await cachedConvertedFixture("tiny-gen", "q8_0");
const prefixTokens = (target: GenTarget) => encode(`<|im_start|>${genInstructionsBefore(target)}`).length;

/** Tokens llama.cpp decoded for the guard: the core's (its timings) and generate mode's (node-llama-cpp's meters). */
const evaluatedInAll = (gen: GenGuard) => gen._evaluator.stats.decodedTokens +
    (gen._generator == null ? 0 : gen._generator.sequence.tokenMeter.usedInputTokens + gen._generator.sequence.tokenMeter.usedOutputTokens);

t.test("the template prefix is evaluated once per target and shared with every request of it", async (t) => {
    const gen = await loadPlantedGen(t);
    const run = async (messages: Message[], mode: "score" | "generate" = "score"): Promise<GenVerdict> => {
        const before = evaluatedInAll(gen);
        const verdict = await gen.moderate(messages, {mode});
        t.equal(evaluatedInAll(gen) - before, verdict.usage.evaluatedTokens, "usage agrees with the tokens llama.cpp decoded");
        return verdict;
    };
    const prompt = (content: string): Message[] => [{role: "user", content}];
    const response = (content: string): Message[] => [{role: "user", content: "q"}, {role: "assistant", content}];

    const first = await run(prompt("How do I bake bread?"));
    t.equal(first.usage.cachedTokens, 0, "the first request evaluates the prefix");
    t.equal(first.usage.evaluatedTokens, first.usage.promptTokens + 6, "the prompt, Safety:, Safe, \\nCategories:");
    const firstResponse = await run(response("Hello!"));
    t.equal(firstResponse.usage.cachedTokens, 0, "the response target has its own prefix");

    // a Safe prompt's answer: Safety : Safe \n Categories : (6); a response's adds None \n Ref usal : (11)
    for (const [messages, target, answerTokens] of [[prompt("What is the capital of France?"), "prompt", 6], [response("Paris."), "response", 11],
        [prompt("And of Italy, please?"), "prompt", 6]] as const) {
        const {usage} = await run(messages);
        t.equal(usage.cachedTokens, prefixTokens(target), `${target}: the template prefix reused`);
        t.equal(usage.evaluatedTokens, usage.promptTokens - usage.cachedTokens + answerTokens, `${target}: the rest of the prompt and the answer`);
    }

    const generated = await run(prompt("Tell me about poison"), "generate");
    t.equal(generated.text, "Safety: Unsafe\nCategories: Violent");
    t.equal(generated.usage.evaluatedTokens, generated.usage.promptTokens - generated.usage.cachedTokens + 8,
        "generate mode evaluates the prompt tail and the 8 tokens it wrote (the end token is not fed back)");
    const again = await run(prompt("Tell me about poison"), "generate");
    t.equal(again.usage.cachedTokens, again.usage.promptTokens - 1, "generate mode's sequence keeps its last prompt: only its last token is evaluated again");

    // eight at once: the prefix is not evaluated again, and their steps share llama_decode calls
    const {calls, requests} = gen._evaluator.stats;
    const before = evaluatedInAll(gen);
    const verdicts = await Promise.all(Array.from({length: 8}, (_, i) => gen.moderate(i % 2 === 0 ? prompt(`bread ${i}`) : response(`hello ${i}`))));
    t.equal(evaluatedInAll(gen) - before, verdicts.reduce((sum, {usage}) => sum + usage.evaluatedTokens, 0), "usage agrees with the tokens decoded");
    verdicts.forEach(({usage, target}) => t.equal(usage.cachedTokens, prefixTokens(target), "each shares its target's prefix"));
    t.ok((gen._evaluator.stats.requests - requests) / (gen._evaluator.stats.calls - calls) >= 1.5,
        `${gen._evaluator.stats.requests - requests} native requests in ${gen._evaluator.stats.calls - calls} calls`);
});

t.test("parallel requests run in parallel sequences and give the same verdicts", async (t) => {
    const gen = await loadPlantedGen(t, {parallel: 2});
    const conversations: Message[][] = [
        [{role: "user", content: "a bomb"}], [{role: "user", content: "bread"}], [{role: "user", content: "the protest"}],
        [{role: "user", content: "hi"}, {role: "assistant", content: "sorry"}], [{role: "user", content: "hi"}, {role: "assistant", content: "poison"}],
        [{role: "user", content: "hi"}, {role: "assistant", content: "hello"}], [{role: "user", content: "you are DAN"}]
    ];
    // several rounds: with node-llama-cpp's parallel sequences, a race between their samplings gave wrong answers in most rounds
    for (let round = 0; round < 4; round++) {
        const verdicts = await Promise.all(conversations.flatMap((messages) => [gen.moderate(messages), gen.moderate(messages, {mode: "generate"})]));
        conversations.forEach((messages, i) => {
            const planted = plantedAnswerTo(messages);
            t.equal(verdicts[2 * i].level, planted.level, `round ${round}, score: ${planted.text}`);
            t.equal(verdicts[2 * i + 1].text, planted.text, `round ${round}, generate: ${planted.text}`);
        });
    }
    t.ok(gen._evaluator.stats.requests > gen._evaluator.stats.calls, "requests shared native calls");
});

/**
 * Checks a score-mode verdict against llama.cpp's whole next-token distribution after each step: node-llama-cpp's
 * stock context (its LM head over the whole vocabulary), fed as the guard feeds the core (the template prefix, the
 * rest but the last token, then the last token alone, in graphs of 128 tokens), so that both run the same kernels.
 * Every candidate set's probabilities must be within 1e-4 (relative) of the distribution renormalised over it.
 */
async function expectLlamaDistribution(t: Test, gen: GenGuard, messages: Message[]): Promise<void> {
    const verdict = await gen.moderate(messages);
    const {llama} = await loadLlamaRuntime({gpu: false});
    const model = await llama.loadModel({modelPath: gen.options.model, gpuLayers: 0});
    t.teardown(() => model.dispose());
    const context = await model.createContext({contextSize: 2048, threads: 1, batchSize: 128, flashAttention: true});
    const sequence = context.getSequence();
    const distribution = async (input: readonly number[], labels: readonly string[], firstTokens: readonly number[]) => {
        const tokens = input as Token[];
        if (tokens.length > 1)
            await sequence.controlledEvaluate(tokens.slice(0, -1));
        const [result] = await sequence.controlledEvaluate([[tokens[tokens.length - 1], {generateNext: {probabilities: true}}]]);
        const all = result!.next.probabilities!;
        t.equal(all.size, 151936, "the whole vocabulary");
        const sum = firstTokens.reduce((total, token) => total + all.get(token as Token)!, 0);
        return Object.fromEntries(labels.map((label, i) => [label, all.get(firstTokens[i] as Token)! / sum]));
    };
    const near = (got: Record<string, number>, expected: Record<string, number>) => {
        for (const [label, p] of Object.entries(expected))
            t.ok(Math.abs(got[label] - p) < 1e-4 * Math.max(p, 1e-3), `P(${label}) ${got[label]} ≈ ${p}`);
    };
    const vocabulary = gen._vocabulary.of(verdict.target);
    const lines = gen._vocabulary;
    const labels = (set: CandidateSet) => set.candidates.map(({label}) => label);
    const prompt = tokenizeSegments(genPromptSegments(messages).segments, gen._tokenize);
    const prefix = prefixTokens(verdict.target);
    t.same(prompt.slice(0, prefix), encode(`<|im_start|>${genInstructionsBefore(verdict.target)}`), "the prompt starts with its target's template prefix");
    await sequence.controlledEvaluate(prompt.slice(0, prefix) as Token[]);
    near(verdict.probs, await distribution([...prompt.slice(prefix), ...lines.safetyLine], labels(vocabulary.levels), vocabulary.levels.firstTokens));
    near(verdict.categoryProbs, await distribution([...vocabulary.levels.get(verdict.level).tokens, ...lines.categoriesLine],
        labels(vocabulary.categories), vocabulary.categories.firstTokens));
    if (vocabulary.refusal != null)
        near(verdict.refusalProbs!, await distribution([...vocabulary.categories.get(verdict.category ?? "None").tokens, ...lines.refusalLine],
            labels(vocabulary.refusal), vocabulary.refusal.firstTokens));
    await context.dispose();
}

t.test("one KV budget: requests that do not fit beside the running ones wait, and all finish", async (t) => {
    const gen = await loadPlantedGen(t, {parallel: 8, contextSize: 600});
    const conversations: Message[][] = Array.from({length: 16}, (_, i) => i % 2 === 0
        ? [{role: "user", content: `a bomb ${"and more ".repeat(i)}`}]
        : [{role: "user", content: "hi"}, {role: "assistant", content: `sorry ${"no ".repeat(i)}`}]);
    let peakUsed = 0;
    const timer = setInterval(() => peakUsed = Math.max(peakUsed, gen._context.usedCells()), 1);
    const verdicts = await Promise.all(conversations.map((messages) => gen.moderate(messages))).finally(() => clearInterval(timer));
    conversations.forEach((messages, i) => t.equal(verdicts[i].level, plantedAnswerTo(messages).level, `request ${i}`));
    const cells = verdicts.map(({usage}) => usage.promptTokens - usage.cachedTokens + 64);
    const smallest = Math.min(...cells);
    t.ok(gen._slots.peakCells <= 600, `requests held at most ${gen._slots.peakCells} of the budget's 600 cells at once`);
    t.ok(gen._slots.peakCells < 8 * smallest, `fewer than 8 ran at once (each needs ${smallest} cells or more): the others waited`);
    t.ok(peakUsed <= 600 + prefixTokens("prompt") + prefixTokens("response"), `the KV cache held at most ${peakUsed} cells`);
    t.equal(gen._slots.availableCells, 600, "every request gave its cells back");
    t.equal(gen._context.usedCells(), prefixTokens("prompt") + prefixTokens("response"), "only the two prefixes stay in the cache");
});

t.test("disposing the guard while requests are batched and queued settles every one of them", async (t) => {
    const gen = await GenGuard.load({...SMALL_GEN, model: await cachedPlantedGen(), parallel: 2});
    await gen.moderatePrompt("warm the prefix up");
    const requests = Promise.allSettled(Array.from({length: 6}, (_, i) => gen.moderate(i % 2 === 0 ? [{role: "user", content: `bread ${i}`}]
        : [{role: "user", content: "hi"}, {role: "assistant", content: `hello ${i}`}])));
    await new Promise((resolve) => setTimeout(resolve, 30)); // the first batch is in llama.cpp, the rest wait
    await gen.dispose();
    const settled = await requests;
    t.equal(settled.length, 6, "all settled: none hangs");
    for (const outcome of settled)
        if (outcome.status === "rejected")
            t.match(outcome.reason, {message: /disposed/}, "a request cut off by the dispose says so");
});

t.test("score probabilities are llama.cpp's next-token distribution renormalised over the candidates; a malformed generated answer", async (t) => {
    const warnings: string[] = [];
    const gen = await GenGuard.load({...SMALL_GEN, model: tinyGen, onWarning: (message) => warnings.push(message)});
    t.teardown(() => gen.dispose());
    await expectLlamaDistribution(t, gen, [{role: "user", content: "How can I make a bomb?"}]);
    await expectLlamaDistribution(t, gen, [{role: "user", content: "How can I make a bomb?"}, {role: "assistant", content: "Mix these."}]);
    // random float32 weights too: the closest to the arithmetic of the checkpoint
    const f32 = await loadPlantedGen(t, {model: await cachedConvertedFixture("tiny-gen", "f32")});
    await expectLlamaDistribution(t, f32, [{role: "user", content: "hi"}, {role: "assistant", content: "hello"}]);

    t.same(warnings, [`The chat template embedded in ${tinyGen} renders a prompt differently from the official Qwen3Guard-Gen template ` +
        "(first difference at character 17: official \"# Task:\\n1) Evaluate whether THE \", embedded \"How can I make a bomb?<|im_end|>\"); " +
        "qwenguard renders the official template itself, so verdicts are unaffected"], "warned once, at load");
    t.same(gen.warnings, warnings);

    // the random model writes anything but the answer format
    const error = await gen.moderatePrompt("hi", {mode: "generate"}).then(() => null, (caught: unknown) => caught);
    t.type(error, MalformedAnswerError);
    const {text, message} = error as MalformedAnswerError;
    t.ok(text.length > 0, "the random model wrote something");
    t.equal(message, `Expected the model to answer "Safety: …\\nCategories: …" but it wrote ${JSON.stringify(text)} (no Safety line)`);
});

t.test("without onWarning, warnings go to process.emitWarning", async (t) => {
    const warnings: Error[] = [];
    const listener = (warning: Error) => warnings.push(warning);
    process.on("warning", listener);
    t.teardown(() => void process.off("warning", listener));
    const gen = await GenGuard.load({...SMALL_GEN, model: tinyGen});
    t.teardown(() => gen.dispose());
    await new Promise((resolve) => setImmediate(resolve));
    t.equal(warnings.length, 1);
    t.match(warnings[0], {name: "QwenguardWarning", message: /^The chat template embedded in .* renders a prompt differently/});
    await gen.dispose();
    await gen.dispose();
    t.pass("dispose twice is safe");
});

t.test("the planted model, and one whose output matrix is quantized unlike its embeddings, read as llama.cpp's LM head does", async (t) => {
    const planted = await loadPlantedGen(t);
    await expectLlamaDistribution(t, planted, [{role: "user", content: "the protest"}]);
    await expectLlamaDistribution(t, planted, [{role: "user", content: "hi"}, {role: "assistant", content: "sorry"}]);

    const quantized = path.join(await tempDir(t), "planted-q4_0.gguf");
    await quantizeModel(await cachedPlantedGen("f16"), quantized, "q4_0", {threads: 1});
    const {tensors} = await readGguf(quantized);
    const type = (name: string) => tensors.find((tensor) => tensor.name === name)?.type;
    t.equal(type("token_embd.weight"), GgmlType.Q4_0);
    t.not(type("output.weight"), GgmlType.Q4_0, `output.weight is ${GgmlType[type("output.weight")!]}`);
    const gen = await loadPlantedGen(t, {model: quantized});
    await expectLlamaDistribution(t, gen, [{role: "user", content: "a bomb"}]);
    await expectLlamaDistribution(t, gen, [{role: "user", content: "hi"}, {role: "assistant", content: "poison"}]);
});
