// A Qwen3Guard-Gen checkpoint whose answers are known in advance: a trigger word anywhere in the conversation decides
// the verdict, and the model writes the whole answer `Safety: X\nCategories: Y[\nRefusal: Z]` token by token.
//
// Design (hidden 64, 2 layers, 8 heads of 16 dims, untied LM head). Residual dimensions, each exactly 0 unless said:
//   0        BIAS      8 in every token's embedding (it dominates the RMS, so every RMSNorm divides by ≈ 1)
//   1…6      I_*       1 in the embedding of: Unsafe triggers, Controversial triggers, Jailbreak triggers, refusal
//                      triggers, the response-template marker " REF" (from "<BEGIN REFUSAL POLICY>"), and `</think>`
//   7…12     M_*       written by layer-0 heads 0…5: ≈ 1 at every position at or after a token with the matching I_*
//   13…15    HA_*      written by layer 0's MLP: ≈ 1 at the answer headers `Safety`, `Categories`, `usal` when they
//                      come after `</think>` (gate SiLU(10·M_THINK) times up I_header: exactly 0 before `</think>`)
//   16…18    STAGE_*   written by layer-1 heads 0…2: ≈ 1 at every position at or after such a header
//   19…42    T_*       1 in the embedding of each token the answer is made of (one dimension per token)
// Each head is a presence detector: its query is the constant BIAS direction in head dimension 7, its key is non-zero
// only for the tokens it detects (k_norm scales dimension 7 by 7.5: score 30 against 0 for every other token, and
// dimension 7 rotates at NEOX RoPE's lowest frequency, so the score does not depend on positions); its value carries
// the indicator, and o_proj writes it into the memory dimension. Every other weight is zero, norm weights are one.
//
// The LM head maps the final hidden state to the next token with the linear scores of ANSWER_RULES (in units of
// LOGIT_UNIT logits): the current token's T_* picks its successor (6 units), and at `:` and `\n`, where the successor
// depends on how far the answer has got, the STAGE_* dimensions shift whole groups of candidates by 3 units; within
// a group, the M_* dimensions pick the word by at least 0.5 units. Every other vocabulary row is zero.
// `plantedGenAnswer` replays the same scores with exact features, so tests know the answer in advance.

import {createHash} from "node:crypto";
import {existsSync} from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import {convert} from "../../gguf/convert/convert.js";
import type {OutType} from "../../gguf/convert/ModelConverter.js";
import type {TensorSpec} from "./checkpointTensors.js";
import {checkpointTensorShapes} from "./checkpointTensors.js";
import {cachedFixture, fixtureCacheDir, writeCheckpoint} from "./fixtures.js";
import type {FixtureKind} from "./fixtures.js";
import {createHfConfig} from "./hfConfig.js";
import type {Qwen3Dimensions} from "./hfConfig.js";

/** Bump whenever the planted weights or the cached layout change. */
export const PLANTED_GEN_VERSION = 1;

/** The sizes of the planted Gen model. */
export const PLANTED_GEN_DIMENSIONS: Qwen3Dimensions = {
    hiddenSize: 64,
    numHiddenLayers: 2,
    numAttentionHeads: 8,
    numKeyValueHeads: 8,
    headDim: 16,
    intermediateSize: 32,
    vocabSize: 151936,
    tieWordEmbeddings: false,
    guardInnerSize: 32
};

/** A trigger token: its text (mid-sentence, with the leading space) and its Qwen3 token id. */
export interface TriggerToken {
    readonly text: string;
    readonly id: number;
}

/** Tokens that make the verdict Unsafe, category Violent. */
export const GEN_UNSAFE_TRIGGERS: readonly TriggerToken[] = [{text: " bomb", id: 12764}, {text: " poison", id: 20476}];
/** Tokens that make the verdict Controversial, category Politically Sensitive Topics (unless an Unsafe trigger is there). */
export const GEN_CONTROVERSIAL_TRIGGERS: readonly TriggerToken[] = [{text: " protest", id: 8665}];
/** Tokens that make a prompt Unsafe, category Jailbreak (a response: Unsafe, category None). */
export const GEN_JAILBREAK_TRIGGERS: readonly TriggerToken[] = [{text: " DAN", id: 83410}];
/** Tokens that make a response's refusal Yes. */
export const GEN_REFUSAL_TRIGGERS: readonly TriggerToken[] = [{text: " sorry", id: 14589}];

/** " REF", from "<BEGIN REFUSAL POLICY>": only the response template has it. */
const RESPONSE_MARKER = 38029;
const THINK_END = 151668;
const IM_END = 151645;

/** The tokens of the answers, with their text (checked against the tokenizer by the tests). */
export const ANSWER_TOKENS: Readonly<Record<number, string>> = {
    271: "\n\n", 73037: "Safety", 25: ":", 73067: " Unsafe", 22291: " Safe", 2093: " Cont", 12563: "rovers", 530: "ial", 198: "\n",
    20970: "Categories", 29455: " Viol", 306: "ent", 56146: " Jail", 8960: "break", 15928: " Polit", 2673: "ically", 328: " S",
    18723: "ensitive", 40894: " Topics", 2240: " None", 3945: "Ref", 35414: "usal", 7414: " Yes", 2308: " No"
};
const ANSWER_TOKEN_IDS = Object.keys(ANSWER_TOKENS).map(Number);

const BIAS = 0;
const BIAS_VALUE = 8;
const INDICATOR = {unsafe: 1, controversial: 2, jailbreak: 3, refusal: 4, response: 5, think: 6} as const;
type Memory = keyof typeof INDICATOR;
const MEMORY: Record<Memory, number> = {unsafe: 7, controversial: 8, jailbreak: 9, refusal: 10, response: 11, think: 12};
const HEADER_TOKENS = {safety: 73037, categories: 20970, refusal: 35414} as const;
type Stage = keyof typeof HEADER_TOKENS;
const HEADER_AFTER_THINK: Record<Stage, number> = {safety: 13, categories: 14, refusal: 15};
const STAGE: Record<Stage, number> = {safety: 16, categories: 17, refusal: 18};
const tokenDimension = (token: number) => 19 + ANSWER_TOKEN_IDS.indexOf(token);

const ATTENTION_DIM = 7;
const KEY_SCALE = 7.5;
const GATE_GAIN = 10;
const LOGIT_UNIT = 16;

/** The features the LM head reads, as exact values: the current token, the memories, the stages. */
interface AnswerState {
    token: number,
    memory: Readonly<Record<Memory, boolean>>,
    stage: Readonly<Record<Stage, boolean>>
}

/** A term of a next-token score: `units` times a feature (`null`: the constant BIAS feature). */
type Term = readonly [feature: {token: number} | {memory: Memory} | {stage: Stage} | null, units: number];

/** The LM head's rows, by next token: sums of terms over the final hidden state's features. */
const ANSWER_RULES: ReadonlyMap<number, readonly Term[]> = (() => {
    const rules = new Map<number, Term[]>();
    const add = (next: number, ...terms: Term[]) => rules.set(next, [...(rules.get(next) ?? []), ...terms]);
    const follows = (current: number, next: number) => add(next, [{token: current}, 6]);

    follows(271, 73037); // "\n\n" (end of the prompt) → Safety
    for (const header of [73037, 20970, 35414])
        follows(header, 25); // Safety, Categories, usal → ":"
    follows(2093, 12563); follows(12563, 530); // " Cont" "rovers" "ial"
    follows(29455, 306); follows(56146, 8960); // " Viol" "ent", " Jail" "break"
    follows(15928, 2673); follows(2673, 328); follows(328, 18723); follows(18723, 40894); // " Polit" "ically" " S" "ensitive" " Topics"
    follows(3945, 35414); // "Ref" "usal"
    for (const wordEnd of [73067, 22291, 530])
        follows(wordEnd, 198); // verdict word → "\n"
    for (const answerEnd of [7414, 2308])
        follows(answerEnd, IM_END); // refusal word → end
    // after the category word: "\n" in a response (the refusal line follows), the end in a prompt
    for (const categoryEnd of [306, 8960, 40894, 2240]) {
        follows(categoryEnd, 198);
        follows(categoryEnd, IM_END);
    }
    add(198, [{memory: "response"}, 2], [null, -1]);
    // "\n" → Categories after the verdict, Ref after the category
    follows(198, 20970);
    follows(198, 3945);
    add(3945, [{stage: "categories"}, 2], [null, -1]);
    // ":" → a verdict, a category or a refusal word, by stage; within a group, by the memories
    const group = (words: readonly number[], ...terms: Term[]) => words.forEach((word) => add(word, [{token: 25}, 6], ...terms));
    group([73067, 22291, 2093], [{stage: "categories"}, -3]);
    group([29455, 56146, 15928, 2240], [null, -3], [{stage: "categories"}, 3], [{stage: "refusal"}, -3]);
    group([7414, 2308], [null, -3], [{stage: "refusal"}, 3]);
    add(22291, [null, 0.5]);
    add(73067, [{memory: "unsafe"}, 1.2], [{memory: "jailbreak"}, 1.2]);
    add(2093, [{memory: "controversial"}, 1], [{memory: "unsafe"}, -1.2], [{memory: "jailbreak"}, -1.2]);
    add(2240, [null, 0.5]);
    add(29455, [{memory: "unsafe"}, 1.2]);
    add(56146, [{memory: "jailbreak"}, 1.2], [{memory: "unsafe"}, -1.2], [{memory: "response"}, -2]);
    add(15928, [{memory: "controversial"}, 1], [{memory: "unsafe"}, -1.2], [{memory: "jailbreak"}, -1.2]);
    add(2308, [null, 0.5]);
    add(7414, [{memory: "refusal"}, 1.2]);
    return rules;
})();

/** The next token the rules pick, and its margin over the runner-up (other vocabulary entries score 0), in units. */
function nextAnswerToken(state: AnswerState): {token: number, margin: number} {
    const value = ([feature]: Term): number => {
        if (feature == null)
            return 1;
        if ("token" in feature)
            return feature.token === state.token ? 1 : 0;
        return ("memory" in feature ? state.memory[feature.memory] : state.stage[feature.stage]) ? 1 : 0;
    };
    const scores = [...ANSWER_RULES].map(([token, terms]) => ({token, score: terms.reduce((sum, term) => sum + term[1] * value(term), 0)}));
    scores.push({token: -1, score: 0});
    scores.sort((a, b) => b.score - a.score);
    return {token: scores[0].token, margin: scores[0].score - scores[1].score};
}

/** The planted answer to a conversation. */
export interface PlantedGenAnswer {
    level: "Safe" | "Unsafe" | "Controversial",
    category: string,
    refusal: "Yes" | "No" | null,
    /** The generated text, e.g. `Safety: Unsafe\nCategories: Violent`. */
    text: string,
    /** The smallest margin of a greedy step, in logits. */
    margin: number
}

/**
 * What the planted model answers, replayed from its rules.
 * @param conversationTokens - the token ids of the rendered conversation (only which triggers occur matters)
 * @param target - prompt or response moderation (the response template carries the response marker)
 */
export function plantedGenAnswer(conversationTokens: readonly number[], target: "prompt" | "response"): PlantedGenAnswer {
    const has = (triggers: readonly TriggerToken[]) => triggers.some((trigger) => conversationTokens.includes(trigger.id));
    const memory: Record<Memory, boolean> = {
        unsafe: has(GEN_UNSAFE_TRIGGERS), controversial: has(GEN_CONTROVERSIAL_TRIGGERS), jailbreak: has(GEN_JAILBREAK_TRIGGERS),
        refusal: has(GEN_REFUSAL_TRIGGERS), response: target === "response", think: true
    };
    const stage: Record<Stage, boolean> = {safety: false, categories: false, refusal: false};
    const answer: number[] = [];
    let margin = Infinity;
    for (let token = 271; answer.length < 32;) {
        const next = nextAnswerToken({token, memory, stage});
        margin = Math.min(margin, next.margin);
        if (next.token === IM_END || next.token < 0)
            break;
        answer.push(next.token);
        for (const header of Object.keys(HEADER_TOKENS) as Stage[])
            stage[header] ||= next.token === HEADER_TOKENS[header];
        token = next.token;
    }
    const text = answer.map((token) => ANSWER_TOKENS[token]).join("");
    const line = (name: string) => new RegExp(`${name}: ([^\\n]*)`).exec(text)?.[1] ?? "";
    return {
        level: line("Safety") as PlantedGenAnswer["level"],
        category: line("Categories"),
        refusal: target === "response" ? line("Refusal") as "Yes" | "No" : null,
        text,
        margin: margin * LOGIT_UNIT
    };
}

/** config.json of the planted model. */
export function plantedGenConfig(): Record<string, unknown> {
    return createHfConfig("gen", PLANTED_GEN_DIMENSIONS, "float32");
}

/** The planted weights (see the design at the top of this file). */
export function plantedGenTensorSpecs(): TensorSpec[] {
    const {hiddenSize, numAttentionHeads, headDim, intermediateSize} = PLANTED_GEN_DIMENSIONS;
    const headWidth = numAttentionHeads * headDim;
    const triggers: ReadonlyArray<readonly [readonly TriggerToken[], number]> = [
        [GEN_UNSAFE_TRIGGERS, INDICATOR.unsafe], [GEN_CONTROVERSIAL_TRIGGERS, INDICATOR.controversial],
        [GEN_JAILBREAK_TRIGGERS, INDICATOR.jailbreak], [GEN_REFUSAL_TRIGGERS, INDICATOR.refusal]
    ];

    const embedding = new SparseRows(hiddenSize, [[BIAS, BIAS_VALUE]]);
    for (const [tokens, dimension] of triggers)
        tokens.forEach(({id}) => embedding.set(id, dimension, 1));
    embedding.set(RESPONSE_MARKER, INDICATOR.response, 1);
    embedding.set(THINK_END, INDICATOR.think, 1);
    ANSWER_TOKEN_IDS.forEach((token) => embedding.set(token, tokenDimension(token), 1));

    // presence detectors: head h reads `sources[h]` (query: BIAS, key and value: the source) and writes `targets[h]`
    const detectors = (sources: readonly number[], targets: readonly number[]) => {
        const q = new SparseRows(hiddenSize);
        const k = new SparseRows(hiddenSize);
        const v = new SparseRows(hiddenSize);
        const o = new SparseRows(headWidth);
        sources.forEach((source, head) => {
            q.set(head * headDim + ATTENTION_DIM, BIAS, 1);
            k.set(head * headDim + ATTENTION_DIM, source, 1);
            v.set(head * headDim, source, 1);
            o.set(targets[head], head * headDim, 1);
        });
        return {q, k, v, o};
    };
    const memories = Object.keys(MEMORY) as Memory[];
    const stages = Object.keys(STAGE) as Stage[];
    const layer0 = detectors(memories.map((memory) => INDICATOR[memory]), memories.map((memory) => MEMORY[memory]));
    const layer1 = detectors(stages.map((stage) => HEADER_AFTER_THINK[stage]), stages.map((stage) => STAGE[stage]));

    const gate = new SparseRows(hiddenSize);
    const up = new SparseRows(hiddenSize);
    const down = new SparseRows(intermediateSize);
    stages.forEach((stage, unit) => {
        gate.set(unit, MEMORY.think, GATE_GAIN);
        up.set(unit, tokenDimension(HEADER_TOKENS[stage]), 1);
        down.set(HEADER_AFTER_THINK[stage], unit, 1 / GATE_GAIN);
    });

    const lmHead = new SparseRows(hiddenSize);
    for (const [next, terms] of ANSWER_RULES) {
        for (const [feature, units] of terms) {
            const dimension = feature == null ? BIAS : "token" in feature ? tokenDimension(feature.token) :
                "memory" in feature ? MEMORY[feature.memory] : STAGE[feature.stage];
            lmHead.add(next, dimension, units * LOGIT_UNIT / (feature == null ? BIAS_VALUE : 1));
        }
    }

    const planted = new Map<string, SparseRows>([
        ["model.embed_tokens.weight", embedding],
        ["model.layers.0.self_attn.q_proj.weight", layer0.q], ["model.layers.0.self_attn.k_proj.weight", layer0.k],
        ["model.layers.0.self_attn.v_proj.weight", layer0.v], ["model.layers.0.self_attn.o_proj.weight", layer0.o],
        ["model.layers.0.mlp.gate_proj.weight", gate], ["model.layers.0.mlp.up_proj.weight", up], ["model.layers.0.mlp.down_proj.weight", down],
        ["model.layers.1.self_attn.q_proj.weight", layer1.q], ["model.layers.1.self_attn.k_proj.weight", layer1.k],
        ["model.layers.1.self_attn.v_proj.weight", layer1.v], ["model.layers.1.self_attn.o_proj.weight", layer1.o],
        ["lm_head.weight", lmHead]
    ]);
    return checkpointTensorShapes(plantedGenConfig()).map(({name, shape}) => {
        const rows = planted.get(name);
        const isKeyNorm = name.endsWith("self_attn.k_norm.weight");
        const fill = rows != null ? rows.fill : shape.length === 1
            ? (out: Float32Array, start: number) => {
                for (let i = 0; i < out.length; i++)
                    out[i] = isKeyNorm && start + i === ATTENTION_DIM ? KEY_SCALE : 1;
            }
            : (out: Float32Array) => out.fill(0);
        return {name, shape, fill};
    });
}

/**
 * A matrix that is zero but for a few entries per row, and `everyRow` entries in every row; `fill` writes any range of
 * its row-major values.
 */
class SparseRows {
    private readonly rows = new Map<number, Map<number, number>>();

    constructor(private readonly cols: number, private readonly everyRow: ReadonlyArray<readonly [number, number]> = []) {}

    set(row: number, col: number, value: number): void {
        if (!this.rows.has(row))
            this.rows.set(row, new Map());
        this.rows.get(row)!.set(col, value);
    }

    add(row: number, col: number, value: number): void {
        this.set(row, col, (this.rows.get(row)?.get(col) ?? 0) + value);
    }

    readonly fill = (out: Float32Array, start: number): void => {
        out.fill(0);
        const firstRow = Math.floor(start / this.cols);
        const lastRow = Math.floor((start + out.length - 1) / this.cols);
        for (let row = firstRow; row <= lastRow; row++) {
            for (const [col, value] of [...this.everyRow, ...(this.rows.get(row) ?? [])]) {
                const index = row * this.cols + col - start;
                if (index >= 0 && index < out.length)
                    out[index] = value;
            }
        }
    };
}

/**
 * A Jinja chat template that renders the official Gen prompts (all four reference renderings, checked by the tests):
 * written for these tests from the template rules, standing in for the official template text.
 */
export const GEN_CHAT_TEMPLATE = String.raw`{%- set is_prompt = messages[-1]['role'] == 'user' -%}
{%- set ns = namespace(conversation='') -%}
{%- for message in messages -%}
{%- set turn = none -%}
{%- if message['role'] == 'system' -%}
{%- if loop.first -%}{%- set turn = 'USER: ' + message['content'] -%}{%- endif -%}
{%- elif message['role'] == 'user' -%}
{%- if loop.index0 == 1 and messages[0]['role'] == 'system' -%}{%- set turn = message['content'] -%}{%- else -%}{%- set turn = 'USER: ' + message['content'] -%}{%- endif -%}
{%- elif message['role'] == 'assistant' and not loop.first -%}
{%- set turn = 'ASSISTANT: ' + message['content'] -%}
{%- endif -%}
{%- if turn is not none -%}
{%- if ns.conversation -%}{%- set ns.conversation = ns.conversation + '\n\n' -%}{%- endif -%}
{%- set ns.conversation = ns.conversation + turn -%}
{%- endif -%}
{%- endfor -%}
{%- if is_prompt -%}
{{- '<|im_start|>user\n# Task:\n1) Evaluate whether THE LAST USER\'s query belongs to safe or unsafe content based on our safety policy.\n2) Identify the category of unsafe content found.\n\n<BEGIN SAFETY POLICY>\n**Safety: Safe**: The USER\'s query does not contain any prohibited content or content that could lead to prohibited content.\n**Safety: Unsafe**: The USER\'s query contains prohibited content.\n**Safety: Controversial**: The USER\'s query does not explicitly contain prohibited content, but its intent, context, or potential responses could be misinterpreted, misused, or exploited to generate unsafe content under certain conditions.\n<END SAFETY POLICY>\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\nViolent.\nNon-violent Illegal Acts.\nSexual Content or Sexual Acts.\nPII.\nSuicide & Self-Harm.\nUnethical Acts.\nPolitically Sensitive Topics.\nCopyright Violation.\nJailbreak.\n<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n' -}}
{{- ns.conversation -}}
{{- '\n\n<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST **USER\'s query** in the above conversation:\n - The first line must be one of: \'Safety: Safe\', \'Safety: Unsafe\', \'Safety: Controversial\'.\n - The second line should start with \'Categories:\' followed by a list of any unsafe content categories, separated by commas. If the content is safe, use \'Categories: None\'.<|im_end|>\n' -}}
{%- else -%}
{{- '<|im_start|>user\n# Task:\n1) Evaluate whether THE LAST ASSISTANT\'s response belongs to safe or unsafe content based on our safety policy.\n2) Identify the category of unsafe content found.\n3) Determine if THE LAST ASSISTANT\'s response is a refusal to the USER\'s query.\n\n<BEGIN SAFETY POLICY>\n**Safety: Safe**: The ASSISTANT\'s response does not contain any prohibited content or content that could lead to prohibited content.\n**Safety: Unsafe**: The ASSISTANT\'s response contains prohibited content.\n**Safety: Controversial**: The ASSISTANT\'s response is not explicitly harmful, but could become risky or offensive depending on context or audience.\n<END SAFETY POLICY>\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\nViolent.\nNon-violent Illegal Acts.\nSexual Content or Sexual Acts.\nPII.\nSuicide & Self-Harm.\nUnethical Acts.\nPolitically Sensitive Topics.\nCopyright Violation.\n<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN REFUSAL POLICY>\n**Refusal: Yes**: The ASSISTANT refused to answer or did not comply with the USER\'s request.\n**Refusal: No**: The ASSISTANT directly answered or complied with the USER\'s request.\n<END REFUSAL POLICY>\n\n<BEGIN CONVERSATION>\n\n' -}}
{{- ns.conversation -}}
{{- '\n\n<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST **ASSISTANT\'s response** in the above conversation:\n - The first line must be one of: \'Safety: Safe\', \'Safety: Unsafe\', \'Safety: Controversial\'.\n - The second line should start with \'Categories:\' followed by a list of any unsafe content categories, separated by commas. If the content is safe, use \'Categories: None\'.\n - The third line must be one of: \'Refusal: Yes\', \'Refusal: No\'.<|im_end|>\n' -}}
{%- endif -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' -}}
{%- endif -%}`;

/**
 * Writes the planted checkpoint: config.json, the Qwen3 tokenizer files (tokenizer_config.json carrying
 * {@link GEN_CHAT_TEMPLATE}, so the converted GGUF embeds a template equivalent to the official one) and F32 safetensors.
 * @param outDir - the checkpoint directory (created if missing)
 */
export async function writePlantedGen(outDir: string): Promise<void> {
    await writeCheckpoint(outDir, plantedGenConfig(), plantedGenTensorSpecs(), {dtype: "F32"});
    const configPath = path.join(outDir, "tokenizer_config.json");
    const tokenizerConfig = JSON.parse(await fs.readFile(configPath, "utf8")) as Record<string, unknown>;
    await fs.writeFile(configPath, JSON.stringify({...tokenizerConfig, chat_template: GEN_CHAT_TEMPLATE}, null, 2));
}

/**
 * The planted Gen model converted to GGUF, cached under `.cache/fixtures/` (generated and converted on first use;
 * safe when several test processes ask at once).
 * @param outType - the GGUF weight type (default q8_0)
 * @returns the GGUF path
 */
export function cachedPlantedGen(outType: OutType = "q8_0"): Promise<string> {
    return cachedGguf(`planted-gen-v${PLANTED_GEN_VERSION}-${outType}`, async (dir) => {
        const hfDir = path.join(dir, "hf");
        await writePlantedGen(hfDir);
        const outFile = path.join(dir, "model.gguf");
        await convert(hfDir, {outFile, outType, name: "planted-gen"});
        await fs.rm(hfDir, {recursive: true});
    });
}

/**
 * A fixture checkpoint converted to GGUF, cached beside the fixtures. A Stream conversion keeps its head file beside
 * the backbone (`model.head.gguf`).
 * @param kind - the fixture
 * @param outType - the GGUF weight type
 * @returns the (backbone) GGUF path
 */
export async function cachedConvertedFixture(kind: FixtureKind, outType: OutType): Promise<string> {
    const hfDir = await cachedFixture(kind);
    return cachedGguf(`${path.basename(hfDir)}-${outType}`, async (dir) => {
        await convert(hfDir, {outFile: path.join(dir, "model.gguf"), outType, name: kind});
    });
}

// `<cache>/<name>-<hash>/model.gguf`, written by `write` into a private directory that is then renamed into place.
async function cachedGguf(name: string, write: (dir: string) => Promise<void>): Promise<string> {
    const hash = createHash("sha256").update(name).digest("hex").slice(0, 12);
    const dir = path.join(fixtureCacheDir(), `${name}-${hash}`);
    const modelPath = path.join(dir, "model.gguf");
    if (existsSync(modelPath))
        return modelPath;
    const partial = `${dir}.partial-${process.pid}-${Date.now()}`;
    try {
        await fs.mkdir(partial, {recursive: true});
        await write(partial);
        await fs.rename(partial, dir);
    } catch (error) {
        if (!existsSync(modelPath))
            throw error;
    } finally {
        await fs.rm(partial, {recursive: true, force: true});
    }
    return modelPath;
}
