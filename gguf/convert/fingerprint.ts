// The checkpoint fingerprint that ties a Stream backbone GGUF to its head GGUF (docs/FORMATS.md).

import {createHash} from "node:crypto";

/** A tensor as the safetensors header describes it. */
export interface TensorDescription {
    readonly name: string;
    readonly dtype: string;
    readonly shape: readonly number[];
}

/**
 * The fingerprint of a checkpoint: `sha256:` + hex SHA-256 over the bytes of config.json, then, for every backbone
 * tensor in sorted name order (UTF-16 code unit order), the line `JSON.stringify([name, dtype, shape]) + "\n"`
 * (e.g. `["model.norm.weight","BF16",[1024]]`). Only headers are read: fast on large checkpoints, and unchanged by
 * re-quantizing the backbone.
 * @param configBytes - the bytes of config.json, as stored
 * @param backboneTensors - every tensor of the checkpoint except the Stream head's, in any order
 * @returns e.g. `sha256:3f1c…`
 */
export function checkpointFingerprint(configBytes: Uint8Array, backboneTensors: readonly TensorDescription[]): string {
    const hash = createHash("sha256");
    hash.update(configBytes);
    const sorted = [...backboneTensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const {name, dtype, shape} of sorted)
        hash.update(JSON.stringify([name, dtype, shape]) + "\n");

    return `sha256:${hash.digest("hex")}`;
}
