// Where a conversion writes: never over the checkpoint's own files (also through links), never a partial file under
// the output's name, and files already at the output paths stay as they were until the new ones are complete.

import {createHash} from "node:crypto";
import {existsSync, readFileSync} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import t from "tap";
import {ConversionOutputError, convert} from "../../gguf/convert/index.js";
import {GgufValueError, readGguf} from "../../gguf/index.js";
import {cachedFixture} from "../helpers/fixtures.js";
import {expectError, tempDir} from "../gguf/ggufTestKit.js";

const fixture = await cachedFixture("tiny-stream", {dtype: "F32"});

/** A private copy of the fixture checkpoint, to point outputs at or to edit. */
async function checkpointCopy(root: string): Promise<string> {
    const dir = path.join(root, "checkpoint");
    await fs.cp(fixture, dir, {recursive: true});
    return dir;
}

const digest = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** Files in `dir` whose names say they were left half-written. */
async function leftovers(dir: string): Promise<string[]> {
    return (await fs.readdir(dir)).filter((name) => /\.(staged|partial)-\d+/.test(name));
}

t.test("an output that is one of the checkpoint's files is refused before anything is written", async (t) => {
    const root = await tempDir(t);
    const dir = await checkpointCopy(root);
    const weights = path.join(dir, "model.safetensors");
    const before = digest(weights);
    await expectError(t, convert(dir, {outFile: weights}), ConversionOutputError,
        `The output ${weights} is the checkpoint's own model.safetensors: write the GGUF somewhere else`);

    // through a symbolic link and a hard link
    const symlink = path.join(root, "link.gguf");
    await fs.symlink(path.join(dir, "config.json"), symlink);
    await expectError(t, convert(dir, {outFile: symlink}), ConversionOutputError,
        `The output ${symlink} is the checkpoint's own config.json: write the GGUF somewhere else`);
    const hardLink = path.join(root, "hard.gguf");
    await fs.link(weights, hardLink);
    await expectError(t, convert(dir, {outFile: hardLink}), ConversionOutputError,
        `The output ${hardLink} is the checkpoint's own model.safetensors: write the GGUF somewhere else`);
    // the Stream head file is an output too
    const headLink = path.join(root, "pair.head.gguf");
    await fs.link(path.join(dir, "tokenizer.json"), headLink);
    await expectError(t, convert(dir, {outFile: path.join(root, "pair.gguf")}), ConversionOutputError,
        `The output ${headLink} is the checkpoint's own tokenizer.json: write the GGUF somewhere else`);

    t.equal(digest(weights), before, "the weights are untouched");
    t.same(await leftovers(root), [], "nothing half-written");
});

t.test("an output that is a folder, or in a missing folder, is refused with what is wrong", async (t) => {
    const root = await tempDir(t);
    await expectError(t, convert(fixture, {outFile: root}), ConversionOutputError,
        `Expected a file path for the output but ${root} is a folder`);
    const missing = path.join(root, "no-such-folder", "out.gguf");
    await expectError(t, convert(fixture, {outFile: missing}), ConversionOutputError,
        `The folder of the output ${missing} (${path.dirname(missing)}) does not exist`);
});

t.test("a failed conversion leaves the files already at the output paths as they were", async (t) => {
    const root = await tempDir(t);
    const dir = await checkpointCopy(root);
    const outFile = path.join(root, "out.gguf");
    const headFile = path.join(root, "out.head.gguf");
    await fs.writeFile(outFile, "the previous model\n");
    await fs.writeFile(headFile, "the previous head\n");

    // fails while the metadata is written, after the output was opened
    const configFile = path.join(dir, "config.json");
    const config = JSON.parse(await fs.readFile(configFile, "utf8")) as Record<string, unknown>;
    await fs.writeFile(configFile, JSON.stringify({...config, bos_token_id: 9_999_999_999}));
    await t.rejects(convert(dir, {outFile}), GgufValueError);
    t.equal(await fs.readFile(outFile, "utf8"), "the previous model\n");
    t.equal(await fs.readFile(headFile, "utf8"), "the previous head\n");
    t.same(await leftovers(root), [], "nothing half-written");

    // a good conversion replaces both, and leaves nothing else
    await fs.writeFile(configFile, JSON.stringify(config));
    const result = await convert(dir, {outFile});
    t.same(result.companionFiles, [headFile]);
    t.equal((await readGguf(outFile)).metadata.getString("qwen3guard.variant"), "stream-backbone");
    t.equal((await readGguf(headFile)).metadata.getString("qwen3guard.variant"), "stream-head");
    t.same(await leftovers(root), [], "nothing half-written");
    t.ok(existsSync(outFile));
});
