import {GgufValueType, readGguf} from "../../gguf/index.js";

/** What a GGUF holds, from its `qwen3guard.variant` metadata (written by `qwenguard convert`). */
export type GuardVariant = "gen" | "stream-backbone" | "stream-head";

/**
 * Reads which Qwen3Guard model a GGUF file holds, from its metadata only.
 * @param modelPath - a GGUF file
 * @returns the variant; null when the file does not say (community conversions of Gen models carry no such key)
 * @throws when the file cannot be read as GGUF
 * @example
 * const variant = await readGuardVariant("model.gguf");
 * const guard = variant === "stream-backbone" ? await StreamGuard.load({model}) : await GenGuard.load({model});
 */
export async function readGuardVariant(modelPath: string): Promise<GuardVariant | null> {
    const {metadata} = await readGguf(modelPath);
    const variant = metadata.find("qwen3guard.variant", GgufValueType.STRING);
    return variant === "gen" || variant === "stream-backbone" || variant === "stream-head" ? variant : null;
}
