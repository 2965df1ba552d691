// `quantizeModel` / `qwenguard quantize`: llama.cpp's quantizer on a converted Stream pair — the output under a
// temporary name until complete, the head copied beside it, and the refusals that protect the input and other heads.

import {spawnSync} from "node:child_process";
import {createHash} from "node:crypto";
import {existsSync, readFileSync} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {GgmlType, readGguf} from "../../gguf/index.js";
import {quantizeModel} from "../../src/index.js";
import {packageRoot} from "../../src/native/addonBuild.js";
import {cachedConvertedFixture} from "../helpers/plantedGen.js";
import {expectError, tempDir} from "../gguf/ggufTestKit.js";

const f16 = await cachedConvertedFixture("tiny-stream", "f16");
const q8 = await cachedConvertedFixture("tiny-stream", "q8_0");
const digest = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** A private copy of a converted pair (backbone `model.gguf` + `model.head.gguf`) in `dir`. */
async function pairCopy(model: string, dir: string): Promise<string> {
    await fs.mkdir(dir, {recursive: true});
    for (const name of ["model.gguf", "model.head.gguf"])
        await fs.copyFile(path.join(path.dirname(model), name), path.join(dir, name));
    return path.join(dir, "model.gguf");
}

const leftovers = async (dir: string) => (await fs.readdir(dir)).filter((name) => name.includes(".partial-"));

t.test("quantizes into another folder: the output complete, the head copied, nothing half-written", async (t) => {
    const root = await tempDir(t);
    const input = await pairCopy(f16, path.join(root, "in"));
    const outDir = path.join(root, "out");
    await fs.mkdir(outDir);
    const output = path.join(outDir, "model-q4_0.gguf");
    const result = await quantizeModel(input, output, "q4_0", {threads: 1});
    t.match(result, {outputPath: output, type: "Q4_0", headPath: path.join(outDir, "model.head.gguf")});
    const {tensors} = await readGguf(output);
    t.equal(tensors.find((tensor) => tensor.name === "blk.0.ffn_up.weight")?.type, GgmlType.Q4_0, "weights quantized");
    t.equal(digest(path.join(outDir, "model.head.gguf")), digest(path.join(root, "in", "model.head.gguf")), "the head copied as it is");
    t.same(await leftovers(outDir), []);
    // again: the same head is already there, which is fine
    await quantizeModel(input, output, "Q4_0", {threads: 1});
    t.same(await leftovers(outDir), []);
});

t.test("refuses what would destroy the input, or another model's head", async (t) => {
    const root = await tempDir(t);
    const input = await pairCopy(f16, path.join(root, "in"));
    const before = digest(input);
    const hardLink = path.join(root, "in", "hard.gguf");
    await fs.link(input, hardLink);
    await expectError(t, quantizeModel(input, hardLink, "Q4_0"), Error, `The output ${hardLink} is the input ${input} (a link to it): write another file`);
    const symlink = path.join(root, "link.gguf");
    await fs.symlink(input, symlink);
    await expectError(t, quantizeModel(input, symlink, "Q4_0"), Error, `The output ${symlink} is the input ${input} (a link to it): write another file`);
    await expectError(t, quantizeModel(input, input, "Q4_0"), Error, `The output ${input} is the input ${input}: write another file`);
    await expectError(t, quantizeModel(input, root, "Q4_0"), Error, `Expected a file path for the output but ${root} is a folder`);
    const missing = path.join(root, "nowhere", "out.gguf");
    await expectError(t, quantizeModel(input, missing, "Q4_0"), Error, `The folder of the output ${missing} does not exist`);
    t.equal(digest(input), before, "the input is untouched");

    // an already quantized model: llama.cpp would refuse after writing an empty output
    const quantizedInput = await pairCopy(q8, path.join(root, "q8"));
    const out = path.join(root, "out.gguf");
    await expectError(t, quantizeModel(quantizedInput, out, "Q4_0"), Error, `${quantizedInput} is already quantized (token_embd.weight is Q8_0), ` +
        "and llama.cpp quantizes only from F32, F16 or BF16 weights: convert the checkpoint with --outtype f16 (or bf16) and quantize that file");
    t.notOk(existsSync(out), "no output");
    t.notOk(existsSync(path.join(root, "model.head.gguf")), "no head copied");

    // another model's head already where the output's backbone will look for its own
    const otherHead = path.join(root, "model.head.gguf");
    await fs.writeFile(otherHead, "another model's head");
    await expectError(t, quantizeModel(input, out, "Q4_0"), Error, `${otherHead} already exists and is another Stream head than ` +
        `${path.join(root, "in", "model.head.gguf")}, which ${input} needs beside it: quantize into another folder, or move that file away`);
    t.equal(await fs.readFile(otherHead, "utf8"), "another model's head", "left as it was");
    t.notOk(existsSync(out), "no output");
});

t.test("the CLI exits with 2 and the message", async (t) => {
    const root = await tempDir(t);
    const input = await pairCopy(q8, root);
    const run = spawnSync(process.execPath, [path.join(packageRoot, "bin", "qwenguard.js"), "quantize", input, path.join(root, "q4.gguf"), "Q4_K_M"],
        {encoding: "utf8"});
    t.equal(run.status, 2);
    t.match(run.stderr, /^qwenguard: .* is already quantized \(token_embd\.weight is Q8_0\)/);
});
