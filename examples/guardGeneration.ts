// Guard a node-llama-cpp generation live with Qwen3Guard-Stream: every generated token id goes straight to the guard
// (same Qwen3 tokenizer family, no re-tokenization), and the generation is aborted the moment the guard flags it.
//
//   node dist/examples/guardGeneration.js <generator.gguf> <stream-guard.gguf> "your prompt"

import {LlamaCompletion} from "node-llama-cpp";
import type {LlamaModel, TokenBias} from "node-llama-cpp";
import {StreamGuard, loadLlamaRuntime} from "../src/index.js";
import type {Flag, Message} from "../src/index.js";

export interface GuardedGeneration {
    /** The text the generator produced before it was stopped (or finished). */
    text: string,
    /** Token ids generated, each scored by the guard. */
    tokens: number[],
    /** Where the guard flagged the response; null when it never did. */
    flag: Flag | null,
    /** Whether generation was aborted because of the flag. */
    aborted: boolean
}

/**
 * Generates a completion of `prompt` with `generator`, feeding each token to a Stream guard session, and aborts the
 * generation through an AbortSignal when the decision rule fires.
 */
export async function generateGuarded(guard: StreamGuard, generator: LlamaModel, prompt: string,
    options: {maxTokens?: number, tokenBias?: TokenBias} = {}): Promise<GuardedGeneration> {
    const messages: Message[] = [{role: "user", content: prompt}];
    const session = await guard.createSession({messages});
    const context = await generator.createContext({contextSize: 512});
    const completion = new LlamaCompletion({contextSequence: context.getSequence()});
    const controller = new AbortController();
    const tokens: number[] = [];
    let scoring: Promise<unknown> = Promise.resolve();
    try {
        const text = await completion.generateCompletion(prompt, {
            maxTokens: options.maxTokens ?? 64,
            temperature: 0,
            tokenBias: options.tokenBias,
            signal: controller.signal,
            stopOnAbortSignal: true,
            onToken(generated) {
                tokens.push(...generated);
                // the guard scores tokens in order; abort as soon as a verdict flags
                scoring = scoring.then(() => session.pushTokens(generated)).then(() => {
                    if (session.flag != null)
                        controller.abort(new Error("flagged by Qwen3Guard-Stream"));
                });
            }
        });
        await scoring;
        return {text, tokens, flag: session.flag, aborted: controller.signal.aborted};
    } finally {
        await session.dispose();
        await context.dispose();
    }
}

async function main(generatorPath: string, guardPath: string, prompt: string): Promise<void> {
    const {llama} = await loadLlamaRuntime();
    const guard = await StreamGuard.load({model: guardPath});
    const generator = await llama.loadModel({modelPath: generatorPath});
    const result = await generateGuarded(guard, generator, prompt);
    process.stdout.write(result.text + "\n");
    process.stderr.write(result.flag != null ? `stopped: ${result.flag.level} (${result.flag.category}) at token ${result.flag.index}\n` : "not flagged\n");
    await generator.dispose();
    await guard.dispose();
}

if (process.argv[1]?.endsWith("guardGeneration.js") && process.argv.length === 5)
    await main(process.argv[2], process.argv[3], process.argv[4]);
