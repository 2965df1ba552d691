import type {LlamaContextSequence, LlamaModel, Token} from "node-llama-cpp";
import type {AddonStreamRequest, AddonStreamResult} from "../native/AddonTypes.js";
import type {RiskLevel} from "../stream/types.js";
import type {AnswerVocabulary, CandidateSet, TargetVocabulary} from "./AnswerVocabulary.js";

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

/** Queues a native request (with other sequences' requests of the moment) and resolves with its result. */
export type EvaluateFunction = (request: AddonStreamRequest) => Promise<AddonStreamResult>;

/**
 * Reads the candidates' next-token probabilities on the addon's core: a request's last position asks for the logits
 * of the candidate tokens only (the rows of the output matrix for them, never the whole LM head), and a set's
 * probabilities are the softmax of its candidates' logits: the model's next-token distribution renormalised over them.
 */
export class CandidateReader {
    /** Every candidate set's first tokens, distinct: the native context's candidates, in its logits' order. */
    readonly tokens: Int32Array;
    private readonly index = new Map<number, number>();

    constructor(vocabulary: AnswerVocabulary) {
        for (const target of [vocabulary.prompt, vocabulary.response])
            for (const set of [target.levels, target.categories, target.refusal])
                for (const token of set?.firstTokens ?? [])
                    if (!this.index.has(token))
                        this.index.set(token, this.index.size);
        this.tokens = Int32Array.from(this.index.keys());
    }

    /** Appends `input` to the sequence and returns the candidates' probabilities after its last token. */
    async read<Label extends string>(evaluate: EvaluateFunction, sequence: number, input: readonly number[],
        set: CandidateSet<Label>): Promise<Record<Label, number>> {
        const {logits} = await evaluate({sequence, tokens: Int32Array.from(input), outputs: Int32Array.of(input.length - 1), heads: 0, logits: true});
        if (logits == null || logits.length !== this.tokens.length)
            throw new Error(`Expected ${this.tokens.length} candidate logits from the core after the ${set.what} prompt but got ${logits?.length ?? "none"}`);
        const own = set.firstTokens.map((token) => logits[this.index.get(token)!]);
        const max = Math.max(...own);
        return set.probabilities(new Map(set.firstTokens.map((token, i) => [token, Math.exp(own[i] - max)])));
    }
}

/**
 * Score mode: evaluates the prompt tail and `Safety:` in one pass and reads the verdict distribution; forces the most
 * probable verdict word and `\nCategories:` and reads the category distribution; for a response, forces the category
 * word and `\nRefusal:` and reads the refusal distribution.
 * @param promptTail - the prompt tokens not yet in the sequence's KV cache
 */
export async function scoreAnswer(reader: CandidateReader, evaluate: EvaluateFunction, sequence: number, promptTail: readonly number[],
    lines: AnswerVocabulary, vocabulary: TargetVocabulary): Promise<ScoredAnswer> {
    let evaluated = 0;
    const step = async <Label extends string>(input: readonly number[], set: CandidateSet<Label>): Promise<[Label, Record<Label, number>]> => {
        const probs = await reader.read(evaluate, sequence, input, set);
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
