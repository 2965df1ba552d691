import {open} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import {ByteReader} from "./ByteReader.js";
import {readFully} from "./readFully.js";

/** A {@link ByteReader} over a file on disk, read through a `FileHandle` chunk by chunk. */
export class FileByteReader extends ByteReader {
    private constructor(private readonly handle: FileHandle, size: number) {
        super(size);
    }

    /**
     * Opens a file for reading; call {@link FileByteReader.close} when done.
     * @param path - the file to read
     */
    public static async open(path: string): Promise<FileByteReader> {
        const handle = await open(path, "r");
        try {
            const {size} = await handle.stat();
            return new FileByteReader(handle, size);
        } catch (error) {
            await handle.close();
            throw error;
        }
    }

    /** Closes the file. */
    public async close(): Promise<void> {
        await this.handle.close();
    }

    protected override readAt(position: number, length: number): Promise<Buffer> {
        return readFully(this.handle, position, length);
    }
}
