import type {FileHandle} from "node:fs/promises";

/**
 * Reads up to `length` bytes at `position` of an open file, looping over short reads.
 * @param handle - an open file
 * @param position - absolute byte offset to read from
 * @param length - number of bytes wanted
 * @returns a new buffer of `length` bytes, or fewer when the file ends first
 */
export async function readFully(handle: FileHandle, position: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafeSlow(length);
    let filled = 0;
    while (filled < length) {
        const {bytesRead} = await handle.read(buffer, filled, length - filled, position + filled);
        if (bytesRead === 0)
            break;

        filled += bytesRead;
    }

    return filled === length ? buffer : buffer.subarray(0, filled);
}
