import type {RiskLevel} from "../stream/types.js";
import {GEN_PROMPT_CATEGORIES, GEN_RESPONSE_CATEGORIES, NO_CATEGORY} from "./genTemplate.js";
import type {GenTarget} from "./genTemplate.js";

/** Tokenizes plain text (no special tokens) with the model's vocabulary. */
export type PlainTokenize = (text: string) => readonly number[];

/** One of the words the model may write at a point of its answer, as tokens. */
export interface Candidate<Label extends string = string> {
    label: Label,
    /** The word with its leading space (` Controversial`), as the model writes it after `:`. */
    tokens: readonly number[]
}

/**
 * The words the model may write at one point of its answer. Each has a distinct FIRST token, so the next-token
 * probability of that token is the word's probability; the rest of a chosen word is then forced.
 */
export class CandidateSet<Label extends string = string> {
    readonly firstTokens: readonly number[];

    /** @throws Error naming both words when two candidates start with the same token */
    constructor(readonly what: string, readonly candidates: readonly Candidate<Label>[]) {
        const owners = new Map<number, Label>();
        for (const {label, tokens} of candidates) {
            if (tokens.length === 0)
                throw new Error(`Expected the ${what} "${label}" to be at least one token of the model's vocabulary but it is none`);
            const other = owners.get(tokens[0]);
            if (other != null)
                throw new Error(`Expected the ${what} candidates to start with distinct tokens but "${other}" and "${label}" both start ` +
                    `with token ${tokens[0]}: this model's vocabulary cannot be scored word by word`);
            owners.set(tokens[0], label);
        }
        this.firstTokens = candidates.map((candidate) => candidate.tokens[0]);
    }

    /** The candidate with this label. */
    get(label: Label): Candidate<Label> {
        return this.candidates.find((candidate) => candidate.label === label)!;
    }

    /** Probabilities keyed by label, from next-token probabilities keyed by token. */
    probabilities(byToken: ReadonlyMap<number, number>): Record<Label, number> {
        const probs = {} as Record<Label, number>;
        let sum = 0;
        for (const {label, tokens} of this.candidates) {
            const p = byToken.get(tokens[0]);
            if (p == null)
                throw new Error(`Expected llama.cpp to return the probability of every ${this.what} candidate but "${label}" (token ${tokens[0]}) is missing`);
            probs[label] = p;
            sum += p;
        }
        for (const label of Object.keys(probs) as Label[])
            probs[label] /= sum;
        return probs;
    }
}

/** The tokens the Gen answer is made of, for one target, derived from the model's own vocabulary. */
export interface TargetVocabulary {
    levels: CandidateSet<RiskLevel>,
    /** The target's categories, then `None`. */
    categories: CandidateSet,
    /** Yes / No; response target only. */
    refusal: CandidateSet<"Yes" | "No"> | null
}

/** The forced texts and candidate words of the Gen answer `Safety: X\nCategories: Y[\nRefusal: Z]`. */
export class AnswerVocabulary {
    private constructor(
        /** `Safety:` */
        readonly safetyLine: readonly number[],
        /** `\nCategories:` */
        readonly categoriesLine: readonly number[],
        /** `\nRefusal:` */
        readonly refusalLine: readonly number[],
        readonly prompt: TargetVocabulary,
        readonly response: TargetVocabulary
    ) {}

    /**
     * Tokenizes the answer's words with the model's vocabulary.
     * @throws Error when two candidates of a set share their first token
     */
    static derive(tokenize: PlainTokenize): AnswerVocabulary {
        const words = <Label extends string>(what: string, labels: readonly Label[]) =>
            new CandidateSet(what, labels.map((label) => ({label, tokens: tokenize(` ${label}`)})));
        const levels = words<RiskLevel>("risk level", ["Safe", "Unsafe", "Controversial"]);
        return new AnswerVocabulary(tokenize("Safety:"), tokenize("\nCategories:"), tokenize("\nRefusal:"), {
            levels,
            categories: words("category", [...GEN_PROMPT_CATEGORIES, NO_CATEGORY]),
            refusal: null
        }, {
            levels,
            categories: words("category", [...GEN_RESPONSE_CATEGORIES, NO_CATEGORY]),
            refusal: words<"Yes" | "No">("refusal", ["Yes", "No"])
        });
    }

    /** The vocabulary of a target. */
    of(target: GenTarget): TargetVocabulary {
        return target === "prompt" ? this.prompt : this.response;
    }

    /** The most tokens score mode forces after the prompt (with the longest words). */
    get longestAnswer(): number {
        const longest = (set: CandidateSet | null) => Math.max(0, ...(set?.candidates.map((candidate) => candidate.tokens.length) ?? []));
        return this.safetyLine.length + longest(this.response.levels) + this.categoriesLine.length + longest(this.prompt.categories) +
            this.refusalLine.length + longest(this.response.refusal);
    }
}
