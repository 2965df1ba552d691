// Shared by the integration tests (AI SDK middleware, OpenAI stream guard): the planted guards, loaded once per file,
// and the scripted answers.

import type {Test} from "tap";
import {GenGuard, StreamGuard} from "../../src/index.js";
import {plantedModels} from "../server/serverTestKit.js";

/** The deltas of the README's example: the unsafe span " bomb poison" arrives split across three of them. */
export const SPLIT_UNSAFE = ["Sure, here ", "is how: bo", "mb poison", " and more."];
/** A safe answer in deltas that do not end on token boundaries. */
export const SAFE = ["Once", " upon a", " time there", " was a", " little", " cat", ".\n", "The end."];

/** The planted Stream and Gen models, each loaded on first use and freed when the file's tests end. */
export function plantedGuards(t: Test): {stream: () => Promise<StreamGuard>, gen: () => Promise<GenGuard>} {
    let stream: Promise<StreamGuard> | undefined;
    let gen: Promise<GenGuard> | undefined;
    t.teardown(async () => {
        await (await stream)?.dispose();
        await (await gen)?.dispose();
    });
    return {
        stream: () => stream ??= plantedModels().then((models) => StreamGuard.load({model: models.stream, threads: 1, contextSize: 2048, maxSessions: 4})),
        gen: () => gen ??= plantedModels().then((models) => GenGuard.load({model: models.gen, threads: 1, contextSize: 1024}))
    };
}

/** Waits until a condition holds (or the time is up: the assertion after it then says what did not happen). */
export async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition() && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 20));
}

/** Counts the guard's evaluate calls (each one llama_decode round) from now on. */
export function countEvaluations(guard: StreamGuard): {readonly count: number, restore: () => void} {
    const evaluator = guard._evaluator;
    const original = evaluator.evaluate;
    const counter = {count: 0, restore: () => void (evaluator.evaluate = original)};
    evaluator.evaluate = function (this: typeof evaluator, ...args: Parameters<typeof original>) {
        counter.count++;
        return original.apply(this, args);
    };
    return counter;
}
