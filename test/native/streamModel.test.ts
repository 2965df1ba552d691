// The Stream model (native/StreamModel.*): loading a backbone + head pair and checking that they belong together,
// the head file's contents, tokenization, and the dispose rules.

import {copyFile, writeFile} from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {readGguf} from "../../gguf/index.js";
import {GgufValueType} from "../../gguf/ggmlTypes.js";
import type {AddonStreamModelOptions} from "../../src/native/AddonTypes.js";
import {ReferenceModel} from "../helpers/referenceForward.js";
import {rewriteGguf} from "../helpers/ggufRewrite.js";
import {CHATML_EXCHANGE, SMALL_CONTEXT, convertedFixture, createStreamContext, expectError, loadStreamModel, maxAbsDiff, streamAddon,
    tempDir} from "./streamTestKit.js";

const tiny = await convertedFixture(t, "tiny-stream", "F32", "f32");
const tinyBf16 = await convertedFixture(t, "tiny-stream", "BF16", "bf16");
const gen = await convertedFixture(t, "tiny-gen", "F32", "f32");
const dir = await tempDir(t);
const fingerprint = (await readGguf(tiny.modelPath)).metadata.get("qwen3guard.fingerprint", GgufValueType.STRING);
const fingerprintBf16 = (await readGguf(tinyBf16.modelPath)).metadata.get("qwen3guard.fingerprint", GgufValueType.STRING);

const options = (model: string, head = ""): AddonStreamModelOptions => ({modelPath: model, headPath: head, gpuLayers: 0, useMmap: true});
const inDir = (name: string) => path.join(dir, name);

// Files for the refusals below.
await writeFile(inDir("notes.gguf"), "not a GGUF file\n");
await rewriteGguf(gen.modelPath, inDir("plain-qwen3.gguf"), {kv: (kv) => {
    for (const key of [...kv.keys()].filter((key) => key.startsWith("qwen3guard.")))
        kv.delete(key);
}});
await copyFile(tiny.modelPath, inDir("lonely.gguf"));
const headEdit = async (name: string, edit: Parameters<typeof rewriteGguf>[2]) => {
    await rewriteGguf(tiny.headPath, inDir(name), edit);
    return inDir(name);
};
const noInnerSize = await headEdit("no-inner.head.gguf", {kv: (kv) => kv.delete("qwen3guard.head.guard_inner_size")});
const epsAsString = await headEdit("eps-string.head.gguf", {kv: (kv) => kv.set("qwen3guard.head.rms_norm_eps", {type: GgufValueType.STRING, value: "1e-6"})});
const noCategory = await headEdit("no-category.head.gguf", {tensors: (tensors) => tensors.filter((tensor) => tensor.name !== "category_head.weight")});
const wideRisk = await headEdit("wide-risk.head.gguf", {tensors: (tensors) => tensors.map((tensor) => tensor.name === "risk_level_head.weight" ?
    {...tensor, ne: [32, 4], data: Buffer.concat([tensor.data, tensor.data.subarray(0, 32 * 4)])} : tensor)});
const wrongHidden = await headEdit("wrong-hidden.head.gguf", {kv: (kv) => kv.set("qwen3guard.head.hidden_size", {type: GgufValueType.UINT32, value: 128})});

interface Refusal {
    readonly name: string;
    readonly options: unknown;
    readonly error: ErrorConstructor | TypeErrorConstructor;
    readonly message: string;
}

const refusals: Refusal[] = [
    {name: "no options", options: undefined, error: TypeError, message: "StreamModel.load: Expected options to be an object but received undefined"},
    {name: "modelPath not a string", options: {...options(tiny.modelPath), modelPath: 1}, error: TypeError,
        message: "StreamModel.load: Expected options.modelPath to be a string but received number 1"},
    {name: "headPath missing", options: {modelPath: tiny.modelPath, gpuLayers: 0, useMmap: true}, error: TypeError,
        message: "StreamModel.load: Expected options.headPath to be a string but received undefined"},
    {name: "gpuLayers not an integer", options: {...options(tiny.modelPath), gpuLayers: 1.5}, error: TypeError,
        message: "StreamModel.load: Expected options.gpuLayers to be a 32-bit integer but received number 1.5"},
    {name: "useMmap not a boolean", options: {...options(tiny.modelPath), useMmap: "yes"}, error: TypeError,
        message: "StreamModel.load: Expected options.useMmap to be a boolean but received a string"},
    {name: "missing model file", options: options(inDir("none.gguf")), error: Error,
        message: `model file ${inDir("none.gguf")} does not exist`},
    {name: "not a GGUF file", options: options(inDir("notes.gguf")), error: Error,
        message: `model file ${inDir("notes.gguf")} could not be read as GGUF (not a GGUF file, or corrupt)`},
    {name: "a plain qwen3 GGUF", options: options(inDir("plain-qwen3.gguf")), error: Error,
        message: `model ${inDir("plain-qwen3.gguf")} is not a Qwen3Guard-Stream backbone (it has no qwen3guard.variant key): ` +
            "convert the Hugging Face Qwen3Guard-Stream checkpoint with qwenguard's converter"},
    {name: "a Gen model", options: options(gen.modelPath), error: Error,
        message: `model ${gen.modelPath} is a Qwen3Guard-Gen model (qwen3guard.variant "gen"), not a Stream backbone: ` +
            "use it with the Gen judge, or pass a Qwen3Guard-Stream conversion"},
    {name: "the head passed as the model", options: options(tiny.headPath), error: Error,
        message: `${tiny.headPath} is a Qwen3Guard-Stream head file, not a backbone: pass the backbone GGUF as the model and this file as the head`},
    {name: "a backbone without its head beside it", options: options(inDir("lonely.gguf")), error: Error,
        message: `model ${inDir("lonely.gguf")} is a Qwen3Guard-Stream backbone; its head file ${inDir(path.basename(tiny.headPath))} ` +
            "(named in qwen3guard.stream.head_file) was not found: pass head: <path of the .head.gguf the converter wrote with it>"},
    {name: "a missing head file", options: options(tiny.modelPath, inDir("none.head.gguf")), error: Error,
        message: `head file ${inDir("none.head.gguf")} does not exist`},
    {name: "the backbone passed as the head", options: options(tiny.modelPath, tiny.modelPath), error: Error,
        message: `head file ${tiny.modelPath} is not a Qwen3Guard-Stream head: expected general.architecture "qwen3guard-stream-head" and ` +
            'qwen3guard.variant "stream-head" but found "qwen3" and "stream-backbone" (that is the backbone: pass it as the model and its .head.gguf as the head)'},
    {name: "the head of another checkpoint", options: options(tiny.modelPath, tinyBf16.headPath), error: Error,
        message: `head file ${tinyBf16.headPath} does not belong to model ${tiny.modelPath}: their qwen3guard.fingerprint keys differ ` +
            `(model ${fingerprint}, head ${fingerprintBf16}); pass the head converted from the same checkpoint`},
    {name: "a head without guard_inner_size", options: options(tiny.modelPath, noInnerSize), error: Error,
        message: `head file ${noInnerSize}: key "qwen3guard.head.guard_inner_size" is missing`},
    {name: "a head with a string eps", options: options(tiny.modelPath, epsAsString), error: Error,
        message: `head file ${epsAsString}: key "qwen3guard.head.rms_norm_eps": expected type f32 but found str`},
    {name: "a head without its category matrix", options: options(tiny.modelPath, noCategory), error: Error,
        message: `head file ${noCategory}: tensor "category_head.weight" is missing`},
    {name: "a head whose risk matrix has 4 rows for 3 labels", options: options(tiny.modelPath, wideRisk), error: Error,
        message: `head file ${wideRisk}: tensor "risk_level_head.weight": expected shape [32, 3] but found [32, 4, 1, 1]`},
    {name: "a head for another hidden size", options: options(tiny.modelPath, wrongHidden), error: Error,
        message: `head file ${wrongHidden} expects hidden size 128 but model ${tiny.modelPath} has 64; pass the head converted with this model`}
];

t.test("load refuses what does not make a Stream model, saying what to pass", async (t) => {
    const addon = await streamAddon();
    for (const refusal of refusals) {
        await t.test(refusal.name, async (t) => {
            await expectError(t, () => addon.StreamModel.load(refusal.options as AddonStreamModelOptions), refusal.error, refusal.message);
        });
    }
});

t.test("the classes cannot be constructed from JS", async (t) => {
    const addon = await streamAddon();
    const StreamModel = addon.StreamModel as unknown as new () => unknown;
    await expectError(t, () => new StreamModel(), TypeError, "StreamModel cannot be constructed directly: use StreamModel.load(options)");
});

t.test("info() reports both files", async (t) => {
    const model = await loadStreamModel(t, tiny, "");
    t.same(model.info(), {
        hiddenSize: 64,
        innerSize: 32,
        rmsNormEps: Math.fround(1e-6),
        trainContextSize: 8192,
        vocabSize: 151936,
        fingerprint,
        headPath: tiny.headPath,
        responseRiskLabels: ["Safe", "Unsafe", "Controversial"],
        responseCategoryLabels: ["Violent", "Sexual Content or Sexual Acts", "Suicide & Self-Harm", "Politically Sensitive Topics", "PII",
            "Copyright Violation", "Non-violent Illegal Acts", "Unethical Acts"],
        queryRiskLabels: ["Safe", "Unsafe", "Controversial"],
        queryCategoryLabels: ["Violent", "Sexual Content or Sexual Acts", "Suicide & Self-Harm", "Politically Sensitive Topics", "PII",
            "Copyright Violation", "Non-violent Illegal Acts", "Unethical Acts", "Jailbreak"],
        variant: "stream"
    }, "an empty headPath finds the head beside the model");
});

t.test("a Gen model on the core: no head, the logits of chosen tokens as the float64 reference computes them", async (t) => {
    const addon = await streamAddon();
    const model = await addon.StreamModel.load({...options(gen.modelPath), gen: true});
    t.teardown(() => model.dispose().catch(() => {}));
    t.match(model.info(), {variant: "gen", hiddenSize: 64, headPath: "", vocabSize: 151936, responseRiskLabels: []});

    const candidates = Int32Array.of(9, 220, 15339, 151645, 1000);
    const context = await createStreamContext(t, model, {candidates, flashAttention: "auto"});
    const tokens = model.tokenize(CHATML_EXCHANGE, true);
    const sequence = context.acquireSequence();
    const [result] = await context.evaluate([{sequence, tokens, outputs: Int32Array.of(3, tokens.length - 1), heads: 0, logits: true, hidden: true}]);
    t.same(Object.keys(result).sort(), ["hidden", "logits"], "logits (and the hidden states asked for), no head outputs");
    t.equal(result.logits!.length, 2 * candidates.length, "outputs × candidates");
    const reference = await ReferenceModel.load(gen.hfDir);
    const states = reference.hiddenStates([...tokens]);
    [3, tokens.length - 1].forEach((position, row) => {
        const logits = reference.lmLogits(states[position]);
        const expected = [...candidates].map((token) => logits[token]);
        const scale = Math.max(...expected.map(Math.abs));
        const got = result.logits!.subarray(row * candidates.length, (row + 1) * candidates.length);
        t.ok(maxAbsDiff(got, expected) < 2e-3 * scale, `position ${position}: ${[...got].map((x) => x.toFixed(4)).join(" ")} ≈ float64 (max |diff| ${maxAbsDiff(got, expected).toExponential(1)})`);
    });

    // a copy in the unified pool shares its cells: counted once
    const copy = context.acquireSequence();
    context.copySequence(sequence, copy);
    t.equal(context.usedCells(), tokens.length, "source and copy hold the same cells");
    await context.evaluate([{sequence: copy, tokens: tokens.subarray(0, 5), outputs: new Int32Array(0), heads: 0}]);
    t.equal(context.usedCells(), tokens.length + 5, "the copy's own tokens count");
    context.truncateSequence(sequence, 10);
    t.equal(context.usedCells(), 10 + tokens.length + 5 - 10, "cells the source dropped are the copy's alone");
    context.releaseSequence(sequence);
    t.equal(context.usedCells(), tokens.length + 5, "the source released: the copy holds all its cells");

    t.throws(() => context.evaluate([{sequence: copy, tokens, outputs: Int32Array.of(0), heads: 1}]),
        {name: "RangeError", message: "StreamContext.evaluate: request 0: this is a Gen model, which has no Stream head: ask for the candidates' logits instead of heads"});
    await expectError(t, model.createContext(SMALL_CONTEXT), Error, "Expected candidate tokens for a context of a Gen model");
    await expectError(t, model.createContext({...SMALL_CONTEXT, candidates: Int32Array.of(5, 5)}), Error, "Expected distinct candidate tokens, but one appears twice");
    await expectError(t, model.createContext({...SMALL_CONTEXT, candidates: Int32Array.of(151936)}), Error,
        `model file ${gen.modelPath}: tensor "token_embd.weight" has 151936 rows: candidate token 151936 has none`);

    const stream = await loadStreamModel(t, tiny);
    await expectError(t, stream.createContext({...SMALL_CONTEXT, candidates}), Error, "A Stream model's context takes no candidate tokens");
    const streamContext = await createStreamContext(t, stream);
    const streamSequence = streamContext.acquireSequence();
    t.throws(() => streamContext.evaluate([{sequence: streamSequence, tokens, outputs: Int32Array.of(0), heads: 0, logits: true}]),
        {name: "RangeError", message: "StreamContext.evaluate: request 0: this is a Stream model, which has no candidate tokens: ask for heads instead of logits"});
    await expectError(t, addon.StreamModel.load({...options(tiny.modelPath), gen: true}), Error,
        `model ${tiny.modelPath} is a Qwen3Guard-Stream backbone, not a Gen model: load it as a Stream model`);
    const unsigned = inDir("no-fingerprint.gguf");
    await rewriteGguf(tiny.modelPath, unsigned, {kv: (kv) => kv.delete("qwen3guard.fingerprint")});
    await expectError(t, addon.StreamModel.load({...options(unsigned), gen: true}), Error,
        `model ${unsigned} is a Qwen3Guard-Stream backbone, not a Gen model: load it as a Stream model`);
    await expectError(t, addon.StreamModel.load({...options(gen.modelPath, tiny.headPath), gen: true}), Error,
        `a Gen model has no head file, but head ${tiny.headPath} was passed`);
});

t.test("a BF16 head loads (widened to F32)", async (t) => {
    const model = await loadStreamModel(t, tinyBf16);
    t.equal(model.info().fingerprint, fingerprintBf16);
});

t.test("tokenize and tokenBytes", async (t) => {
    const model = await loadStreamModel(t, tiny);
    await t.test("bad arguments", async (t) => {
        await expectError(t, () => model.tokenize(1 as unknown as string, true), TypeError,
            "StreamModel.tokenize: Expected text to be a string but received number 1");
        await expectError(t, () => model.tokenize("x", undefined as unknown as boolean), TypeError,
            "StreamModel.tokenize: Expected parseSpecial to be a boolean but received undefined");
        await expectError(t, () => model.tokenBytes(1.5), TypeError,
            "StreamModel.tokenBytes: Expected token to be a 32-bit integer but received number 1.5");
        await expectError(t, () => model.tokenBytes(-1), RangeError,
            "StreamModel.tokenBytes: Expected a token id between 0 and 151935 but received -1");
        await expectError(t, () => model.tokenBytes(151936), RangeError,
            "StreamModel.tokenBytes: Expected a token id between 0 and 151935 but received 151936");
    });

    const chatml = "<|im_start|>user\nIs a bomb dangerous?<|im_end|>";
    const special = model.tokenize(chatml, true);
    t.same([...special.subarray(0, 3)], [151644, 872, 198], "<|im_start|> user \\n");
    t.equal(special.at(-1), 151645, "<|im_end|> is one special token");
    t.ok(special.includes(12764), "' bomb' is Qwen3's token 12764");
    const plain = model.tokenize(chatml, false);
    t.notOk(plain.some((id) => id >= 151643), "parseSpecial false reads special-token text as plain text");
    t.same(model.tokenize("", true), new Int32Array(0));

    const text = "Grüße, 世界! 🙂 <|im_end|>\n\ttabs";
    const bytes = Buffer.concat([...model.tokenize(text, true)].map((id) => Buffer.from(model.tokenBytes(id))));
    t.equal(bytes.toString("utf8"), text, "the token bytes put the text back together, special tokens rendered");
    t.equal(Buffer.from(model.tokenBytes(151645)).toString(), "<|im_end|>");
});

t.test("dispose: contexts first, then the model; a disposed model refuses every call", async (t) => {
    const addon = await streamAddon();
    const model = await addon.StreamModel.load(options(tiny.modelPath));
    const context = await model.createContext({...SMALL_CONTEXT, contextSize: 128, maxSequences: 1, batchSize: 32});
    await expectError(t, model.dispose(), Error, "StreamModel.dispose: 1 context(s) of this model are still open; dispose them first");
    await context.dispose();
    await model.dispose();
    await model.dispose();
    await expectError(t, () => model.info(), Error, "StreamModel.info: the model is disposed");
    await expectError(t, () => model.tokenize("x", true), Error, "StreamModel.tokenize: the model is disposed");
    await expectError(t, () => model.createContext({...SMALL_CONTEXT, contextSize: 128, maxSequences: 1, batchSize: 32}), Error,
        "StreamModel.createContext: the model is disposed");
});

t.test("createContext refuses bad options", async (t) => {
    const model = await loadStreamModel(t, tiny);
    await expectError(t, () => model.createContext({contextSize: "big"} as unknown as Parameters<typeof model.createContext>[0]), TypeError,
        "StreamModel.createContext: Expected options.contextSize to be a 32-bit integer but received a string");
    await expectError(t, () => model.createContext({...SMALL_CONTEXT, contextSize: 0, maxSequences: 1, batchSize: 8}), RangeError,
        "StreamModel.createContext: Expected positive contextSize, maxSequences, batchSize, ubatchSize and outputBatchSize but received 0, 1, 8, 128 and 64");
    await expectError(t, () => model.createContext({...SMALL_CONTEXT, flashAttention: "yes" as "on"}), RangeError,
        'StreamModel.createContext: Expected options.flashAttention to be "auto", "on" or "off" but received "yes"');
    await expectError(t, () => model.createContext({...SMALL_CONTEXT, stopAfterHidden: undefined as unknown as boolean}), TypeError,
        "StreamModel.createContext: Expected options.stopAfterHidden to be a boolean but received undefined");
    await expectError(t, model.createContext({...SMALL_CONTEXT, contextSize: 64, maxSequences: 1000, batchSize: 8}), Error,
        "Expected maxSequences between 1 and 256 but received 1000");
    const context = await createStreamContext(t, model, {maxSequences: 256});
    t.equal(context.usedCells(), 0, "256 sequences are llama.cpp's limit and fine");
});

