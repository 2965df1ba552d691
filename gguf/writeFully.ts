import type {FileHandle} from "node:fs/promises";

/**
 * Writes all of `bytes` at `position` of an open file, looping over short writes.
 * @param handle - a file open for writing
 * @param bytes - the bytes to write
 * @param position - absolute byte offset to write at
 */
export async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
        const {bytesWritten} = await handle.write(bytes, done, bytes.length - done, position + done);
        done += bytesWritten;
    }
}
