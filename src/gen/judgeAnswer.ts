import {TokenBias} from "node-llama-cpp";
import type {LlamaContextSequence, LlamaModel, Token} from "node-llama-cpp";
import type {RiskLevel} from "../stream/types.js";
import type {AnswerVocabulary, CandidateSet, TargetVocabulary} from "./AnswerVocabulary.js";

/**
 * Added to the logit of every candidate of a set before llama.cpp's top-k keeps exactly the candidates: larger than
 * any gap between two logits of a real model, so the k survivors are the candidates; adding the same value to all of
 * them leaves their softmax unchanged (up to float32 rounding at this magnitude, about 1e-4 relative). This reads the
 * candidates' renormalised probabilities without copying the whole vocabulary's distribution out of llama.cpp.
 */
const CANDIDATE_LOGIT_LIFT = 1000;

/** The answer as scored: each step's distribution and the word chosen from it. */
export interface ScoredAnswer {
    level: RiskLevel,
    probs: Record<RiskLevel, number>,
    category: string,
    categoryProbs: Record<string, number>,
    refusal: "Yes" | "No" | null,
    refusalProbs: {Yes: number, No: number} | null,
    /** Tokens evaluated, prompt tail included. */
    evaluated: number
}

/** Reads the candidates' next-token probabilities through llama.cpp's sampler chain (logit bias → top-k). */
export class CandidateReader {
    private readonly biases = new Map<CandidateSet, TokenBias>();

    constructor(model: LlamaModel, vocabulary: AnswerVocabulary) {
        for (const target of [vocabulary.prompt, vocabulary.response]) {
            for (const set of [target.levels, target.categories, target.refusal]) {
                if (set == null || this.biases.has(set))
                    continue;
                const bias = new TokenBias(model.tokenizer);
                for (const token of set.firstTokens)
                    bias.set(token as Token, {logit: CANDIDATE_LOGIT_LIFT});
                this.biases.set(set, bias);
            }
        }
    }

    /** Evaluates `input` on the sequence and returns the candidates' probabilities after its last token. */
    async read<Label extends string>(sequence: LlamaContextSequence, input: readonly number[], set: CandidateSet<Label>): Promise<Record<Label, number>> {
        const tokens = input as Token[];
        const options = {temperature: 1, topK: set.firstTokens.length, topP: 1, minP: 0, tokenBias: this.biases.get(set)!};
        const results = await sequence.controlledEvaluate([
            ...tokens.slice(0, -1),
            [tokens[tokens.length - 1], {generateNext: {probabilities: true, options}}]
        ]);
        const next = results[tokens.length - 1]?.next.probabilities;
        if (next == null)
            throw new Error(`Expected next-token probabilities from llama.cpp after the ${set.what} prompt but got none`);
        return set.probabilities(next);
    }
}

/**
 * Score mode: evaluates the prompt tail and `Safety:` in one pass and reads the verdict distribution; forces the most
 * probable verdict word and `\nCategories:` and reads the category distribution; for a response, forces the category
 * word and `\nRefusal:` and reads the refusal distribution.
 * @param promptTail - the prompt tokens not yet in the sequence's KV cache
 */
export async function scoreAnswer(reader: CandidateReader, sequence: LlamaContextSequence, promptTail: readonly number[],
    lines: AnswerVocabulary, vocabulary: TargetVocabulary): Promise<ScoredAnswer> {
    let evaluated = 0;
    const step = async <Label extends string>(input: readonly number[], set: CandidateSet<Label>): Promise<[Label, Record<Label, number>]> => {
        const probs = await reader.read(sequence, input, set);
        evaluated += input.length;
        return [mostProbable(probs), probs];
    };

    const [level, probs] = await step([...promptTail, ...lines.safetyLine], vocabulary.levels);
    const [category, categoryProbs] = await step([...vocabulary.levels.get(level).tokens, ...lines.categoriesLine], vocabulary.categories);
    if (vocabulary.refusal == null)
        return {level, probs, category, categoryProbs, refusal: null, refusalProbs: null, evaluated};
    const [refusal, refusalProbs] = await step([...vocabulary.categories.get(category).tokens, ...lines.refusalLine], vocabulary.refusal);
    return {level, probs, category, categoryProbs, refusal, refusalProbs, evaluated};
}

/**
 * Generate mode: greedy generation after the prompt until an end-of-generation token or `maxTokens`.
 * @returns the generated text and the number of tokens evaluated
 */
export async function generateAnswer(model: LlamaModel, sequence: LlamaContextSequence, promptTail: readonly number[],
    maxTokens: number): Promise<{text: string, evaluated: number}> {
    const generated: Token[] = [];
    let cutOff = false;
    for await (const token of sequence.evaluate(promptTail as Token[], {temperature: 0})) {
        generated.push(token);
        cutOff = generated.length >= maxTokens;
        if (cutOff)
            break;
    }
    // every generated token is fed back to get the next one, except the last when generation was cut off
    return {text: model.detokenize(generated), evaluated: promptTail.length + generated.length - (cutOff ? 1 : 0)};
}

function mostProbable<Label extends string>(probs: Record<Label, number>): Label {
    let best: Label | undefined;
    for (const label of Object.keys(probs) as Label[])
        if (best == null || probs[label] > probs[best])
            best = label;
    return best!;
}
