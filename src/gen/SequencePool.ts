import type {LlamaContextSequence, Token} from "node-llama-cpp";

/**
 * The context sequences that serve one Gen target. A request takes a free sequence (or waits for one, first come
 * first served); the sequence keeps what it evaluated, so the next request on it re-evaluates only the tokens after
 * their common prefix: the template text before the conversation is evaluated once per sequence.
 */
export class SequencePool {
    private readonly free: LlamaContextSequence[];
    private readonly waiting: Array<(sequence: LlamaContextSequence) => void> = [];

    constructor(sequences: readonly LlamaContextSequence[]) {
        this.free = [...sequences];
    }

    /**
     * Runs `work` on a free sequence aligned with `tokens`: everything the sequence holds after its common prefix with
     * `tokens` is erased, and `work` receives how many leading tokens are already evaluated. The last token is always
     * left to evaluate (its next-token probabilities are needed).
     */
    async use<T>(tokens: readonly number[], work: (sequence: LlamaContextSequence, cached: number) => Promise<T>): Promise<T> {
        const sequence = this.free.pop() ?? await new Promise<LlamaContextSequence>((resolve) => this.waiting.push(resolve));
        try {
            const cached = Math.min(sequence.compareContextTokens(tokens as Token[]).firstDifferentIndex, tokens.length - 1);
            if (cached < sequence.nextTokenIndex)
                await sequence.eraseContextTokenRanges([{start: cached, end: sequence.nextTokenIndex}]);
            return await work(sequence, cached);
        } finally {
            const next = this.waiting.shift();
            if (next != null)
                next(sequence);
            else
                this.free.push(sequence);
        }
    }
}
