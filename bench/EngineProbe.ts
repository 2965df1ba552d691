// The Stream engine below the Stream API: the addon's own model and context (the contract in src/native/AddonTypes.ts),
// fed one token per evaluate with less and less work per token, to see where a Stream token's time goes.

import type {Addon, AddonStreamContext, AddonStreamContextOptions, AddonStreamModel, AddonStreamRequest} from "../src/native/AddonTypes.js";
import {AddonHead} from "../src/native/AddonTypes.js";

/** What one evaluate of a single token asks of the engine. */
export type ProbeMode =
    /** The token is only added to the KV cache: no output row (the Stream backbone's floor). */
    | "noOutput"
    /** An output row (the final norm, the hidden state copied out; the graph stops before the LM head) but no head. */
    | "outputRow"
    /** The output row and the response head: what `StreamSession.pushTokens` asks for, minus the JS API. */
    | "head";

/** The request fields of each mode. */
const MODE_REQUESTS: Record<ProbeMode, Pick<AddonStreamRequest, "outputs" | "heads">> = {
    noOutput: {outputs: Int32Array.of(), heads: 0},
    outputRow: {outputs: Int32Array.of(0), heads: 0},
    head: {outputs: Int32Array.of(0), heads: AddonHead.response}
};

/** One sequence of an addon Stream context, holding a fixed prompt that every measurement returns to. */
export class EngineProbe {
    private disposed = false;

    private constructor(
        private readonly model: AddonStreamModel,
        private readonly context: AddonStreamContext,
        private readonly sequence: number,
        /** Tokens of the prompt the sequence holds between measurements. */
        readonly promptLength: number
    ) {}

    /**
     * Loads the Stream pair through the addon, makes a one-sequence context and feeds `prompt` (no outputs).
     * @param addon - from `loadLlamaRuntime()`
     * @param options - the context's options, as a StreamGuard's (less maxSequences), and the model's GPU layers
     */
    static async load(addon: Addon, files: {model: string, head: string}, prompt: readonly number[],
        {gpuLayers, ...options}: {gpuLayers: number} & Omit<AddonStreamContextOptions, "maxSequences">): Promise<EngineProbe> {
        const model = await addon.StreamModel.load({modelPath: files.model, headPath: files.head, gpuLayers, useMmap: true});
        try {
            const context = await model.createContext({...options, maxSequences: 1});
            const sequence = context.acquireSequence();
            await context.evaluate([{sequence, tokens: Int32Array.from(prompt), ...MODE_REQUESTS.noOutput}]);
            return new EngineProbe(model, context, sequence, prompt.length);
        } catch (error) {
            await model.dispose();
            throw error;
        }
    }

    /**
     * Appends one token in `mode`.
     * @returns the evaluate's time in milliseconds
     */
    async step(token: number, mode: ProbeMode): Promise<number> {
        const start = performance.now();
        await this.context.evaluate([{sequence: this.sequence, tokens: Int32Array.of(token), ...MODE_REQUESTS[mode]}]);
        return performance.now() - start;
    }

    /** Drops every token after the prompt. */
    reset(): void {
        this.context.truncateSequence(this.sequence, this.promptLength);
    }

    /** Frees the context and the model. Safe to call twice. */
    async dispose(): Promise<void> {
        if (this.disposed)
            return;
        this.disposed = true;
        await this.context.dispose();
        await this.model.dispose();
    }
}
