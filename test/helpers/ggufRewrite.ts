// Copies of GGUF files with their metadata and tensors edited: hostile and corrupt files for the loaders' tests and the
// fuzz harness.

import {GgufWriter, readGguf, readTensorData} from "../../gguf/index.js";
import type {GgmlType, GgufKv} from "../../gguf/index.js";

/** One tensor of a file being copied: its info and its bytes. */
export interface TensorCopy {
    name: string;
    ne: readonly number[];
    type: GgmlType;
    data: Buffer;
}

/** How to edit a copy: the metadata entries (in file order) and the tensors. */
export interface GgufEdit {
    kv?: (entries: Map<string, GgufKv>) => void;
    tensors?: (tensors: TensorCopy[]) => TensorCopy[];
}

/**
 * Copies a GGUF file with its metadata and tensors edited (written by the project's own GgufWriter, so the copy is a
 * well-formed file whatever its content).
 * @param source - the file to copy
 * @param target - the copy
 * @param edit - the edits
 */
export async function rewriteGguf(source: string, target: string, edit: GgufEdit): Promise<void> {
    const file = await readGguf(source);
    const entries = new Map(file.metadata.entries);
    edit.kv?.(entries);
    let tensors: TensorCopy[] = [];
    for (const info of file.tensors)
        tensors.push({name: info.name, ne: info.ne, type: info.type, data: await readTensorData(source, info)});
    tensors = edit.tensors?.(tensors) ?? tensors;

    const writer = await GgufWriter.create(target);
    for (const [key, kv] of entries)
        writer.addKv(key, kv.type, kv.value);
    for (const tensor of tensors)
        writer.addTensorInfo(tensor.name, tensor.ne, tensor.type);
    await writer.writeHeader();
    for (const tensor of tensors)
        await writer.writeTensorData(tensor.name, tensor.data);
    await writer.close();
}
