// Model names, the hub environment and the cache folder: what each name means, and the exact refusals.

import {writeFile} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import {ModelNameError, hubEnvironment, isModelName, modelCacheDir, parseModelName} from "../../src/index.js";
import {cacheFolderName} from "../../src/hub/modelNames.js";
import {tempDir} from "../gguf/ggufTestKit.js";

const KNOWN = "gen-0.6b, gen-4b, gen-8b, stream-0.6b, stream-4b, stream-8b";

t.test("names that say no model are refused, naming what was expected", async (t) => {
    const table: Array<[string, string]> = [
        ["gen-1b", `Unknown model "gen-1b": expected one of ${KNOWN} (with an optional :TYPE), hf:OWNER/REPO[@REV][:TYPE], ` +
            "hf:OWNER/REPO[@REV]/FILE.gguf, an https:// URL of a GGUF, or a path to a GGUF file"],
        ["gen-4b:q4_k_m:x", `Unknown model "gen-4b:q4_k_m:x": expected one of ${KNOWN} (with an optional :TYPE), hf:OWNER/REPO[@REV][:TYPE], ` +
            "hf:OWNER/REPO[@REV]/FILE.gguf, an https:// URL of a GGUF, or a path to a GGUF file"],
        ["gen-4b:q3", 'Unknown type "q3" in "gen-4b:q3": expected one of f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s, q5_1, q5_0, q4_k_m, q4_k_s, q4_1, q4_0, iq4_nl, iq4_xs, q3_k_l, q3_k_m, q3_k_s, q2_k'],
        ["gen-4b:f32", 'Unknown type "f32" in "gen-4b:f32": expected one of f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s, q5_1, q5_0, q4_k_m, q4_k_s, q4_1, q4_0, iq4_nl, iq4_xs, q3_k_l, q3_k_m, q3_k_s, q2_k'],
        ["hf:Qwen", 'Invalid model reference "hf:Qwen": expected hf:OWNER/REPO[@REV][:TYPE] (a checkpoint repository) or hf:OWNER/REPO[@REV]/FILE.gguf (a GGUF in it)'],
        ["hf:../etc/passwd", 'Invalid model reference "hf:../etc/passwd": expected hf:OWNER/REPO[@REV][:TYPE] (a checkpoint repository) or hf:OWNER/REPO[@REV]/FILE.gguf (a GGUF in it)'],
        ["hf:a/b/weights.bin", 'Invalid model reference "hf:a/b/weights.bin": "weights.bin" is not a .gguf file; expected hf:OWNER/REPO[@REV][:TYPE] ' +
            "(a checkpoint repository) or hf:OWNER/REPO[@REV]/FILE.gguf (a GGUF in it)"],
        ["hf:a/b/../c.gguf", 'Invalid model reference "hf:a/b/../c.gguf": "../c.gguf" is not a .gguf file; expected hf:OWNER/REPO[@REV][:TYPE] ' +
            "(a checkpoint repository) or hf:OWNER/REPO[@REV]/FILE.gguf (a GGUF in it)"],
        ["hf:a/b@x/../y", 'Invalid revision "x/../y" in "hf:a/b@x/../y": expected a branch, a tag or a commit'],
        ["constructor", `Unknown model "constructor": expected one of ${KNOWN} (with an optional :TYPE), hf:OWNER/REPO[@REV][:TYPE], ` +
            "hf:OWNER/REPO[@REV]/FILE.gguf, an https:// URL of a GGUF, or a path to a GGUF file"],
        ["http://example.com/m.gguf", 'Expected an https:// URL but received "http://example.com/m.gguf": a model over plain http could be swapped on the way'],
        ["https://example.com/model.safetensors", 'Expected the URL of a .gguf file but received "https://example.com/model.safetensors": ' +
            "a checkpoint repository is pulled as hf:OWNER/REPO"]
    ];
    for (const [name, message] of table)
        t.throws(() => parseModelName(name), {name: "ModelNameError", message}, name);
    t.ok(new ModelNameError("x") instanceof Error);
});

t.test("official names, types, hub references and URLs", async (t) => {
    t.match(parseModelName("gen-0.6b"), {kind: "checkpoint", name: "gen-0.6b:q8_0", repo: "Qwen/Qwen3Guard-Gen-0.6B", revision: undefined, type: "q8_0", variant: "gen"});
    t.match(parseModelName("stream-8b:Q4_K_M"), {kind: "checkpoint", name: "stream-8b:q4_k_m", repo: "Qwen/Qwen3Guard-Stream-8B", type: "q4_k_m", variant: "stream"});
    t.match(parseModelName("hf:me/Guard-FT"), {kind: "checkpoint", name: "hf:me/Guard-FT:q8_0", repo: "me/Guard-FT", revision: undefined, type: "q8_0"});
    t.match(parseModelName("hf:me/Guard-FT@refs/pr/1:f16"), {kind: "checkpoint", name: "hf:me/Guard-FT@refs%2Fpr%2F1:f16", revision: "refs/pr/1", type: "f16"});
    t.match(parseModelName("hf:me/gguf@v2/sub/model-Q4.gguf"), {kind: "hub-gguf", name: "hf:me/gguf@v2/sub/model-Q4.gguf", repo: "me/gguf", revision: "v2", file: "sub/model-Q4.gguf"});
    t.match(parseModelName("hf:me/gguf/model.gguf"), {kind: "hub-gguf", revision: undefined, file: "model.gguf"});
    t.match(parseModelName("https://example.com/a/m.gguf?download=1"), {kind: "url", url: "https://example.com/a/m.gguf?download=1"});
    t.match(parseModelName("http://127.0.0.1:8000/m.gguf"), {kind: "url"}, "plain http from this machine");
    t.notOk("variant" in parseModelName("hf:me/Guard-FT") && parseModelName("hf:me/Guard-FT")["variant" as never], "a fine-tune's variant comes from its config.json");

    t.same(["gen-0.6b", "stream-4b:q4_0", "hf:a/b", "https://x/m.gguf", "model.gguf", "./gen-0.6b", "gen", "toString"].map(isModelName), [true, true, true, true, false, false, false, false]);
});

t.test("every name has its own cache folder, and official ones read as their names", async (t) => {
    t.equal(cacheFolderName(parseModelName("gen-0.6b")), "gen-0.6b-q8_0");
    t.equal(cacheFolderName(parseModelName("stream-4b:q4_k_m")), "stream-4b-q4_k_m");
    const others = ["hf:a/b", "hf:a/b:f16", "hf:a/b@v1", "hf:a/b/m.gguf", "hf:a/b/M.gguf", "https://h/x/m.gguf"].map((name) => cacheFolderName(parseModelName(name)));
    t.equal(new Set(others).size, others.length, "no two share a folder");
    for (const folder of others)
        t.match(folder, /^[A-Za-z0-9._-]+-[0-9a-f]{8}$/, "a plain file name");
});

t.test("the hub environment and the cache folder follow huggingface_hub's and XDG's conventions", async (t) => {
    t.same(hubEnvironment({}), {endpoint: "https://huggingface.co", token: undefined, tokenSource: undefined, offline: false});
    t.equal(hubEnvironment({HF_ENDPOINT: "http://127.0.0.1:9/", HF_HOME: "/nonexistent"}).endpoint, "http://127.0.0.1:9");
    t.same(hubEnvironment({HF_TOKEN: " hf_abc \n", HF_HOME: "/nonexistent"}), {endpoint: "https://huggingface.co", token: "hf_abc", tokenSource: "HF_TOKEN", offline: false});
    for (const value of ["1", "ON", "yes", "true"])
        t.equal(hubEnvironment({HF_HUB_OFFLINE: value, HF_HOME: "/nonexistent"}).offline, true, value);
    t.equal(hubEnvironment({HF_HUB_OFFLINE: "0", HF_HOME: "/nonexistent"}).offline, false);
    const home = await tempDir(t);
    await writeFile(path.join(home, "token"), "hf_from_file\n");
    t.same(hubEnvironment({HF_HOME: home}), {endpoint: "https://huggingface.co", token: "hf_from_file", tokenSource: path.join(home, "token"), offline: false});
    t.equal(hubEnvironment({XDG_CACHE_HOME: path.dirname(home), HF_HOME: home, HF_TOKEN: "hf_env"}).token, "hf_env", "HF_TOKEN wins over the file");

    t.equal(modelCacheDir({QWENGUARD_MODELS: "/m"}), "/m");
    t.equal(modelCacheDir({XDG_CACHE_HOME: "/x"}), "/x/qwenguard/models");
    t.equal(modelCacheDir({}), path.join(os.homedir(), ".cache", "qwenguard", "models"));
});
