import {GgufTruncatedError} from "./errors.js";

const DEFAULT_CHUNK_SIZE = 1024 * 1024;

/**
 * A forward-only little-endian cursor over a byte source of known size, with typed reads.
 *
 * It keeps a window of the source in memory and refills it in chunks of at least `chunkSize` bytes (growing the
 * window when a single field is larger), so a multi-gigabyte file is read without loading it whole. Subclasses
 * provide the bytes through {@link ByteReader.readAt}.
 *
 * Reads are synchronous and consume bytes already in the window: call {@link ByteReader.ensure} first. A parser
 * checks {@link ByteReader.buffered} and awaits only when the window runs dry, so reading a 150,000-entry vocabulary
 * costs a handful of awaits, not one per value.
 *
 * @example
 * await reader.ensure(8);
 * const count = reader.readUint64();
 */
export abstract class ByteReader {
    /** Absolute offset of the next byte to read. */
    public offset = 0;

    /** What is being read, for error messages (e.g. `the value of key "general.name"`); set by the parser. */
    public context = "the data";

    private window: Buffer = Buffer.alloc(0);
    private windowStart = 0;

    /**
     * @param size - total size of the source in bytes
     * @param chunkSize - minimum number of bytes fetched per refill
     */
    protected constructor(public readonly size: number, private readonly chunkSize = DEFAULT_CHUNK_SIZE) {}

    /**
     * Reads up to `length` bytes of the source at `position`.
     * @returns the bytes read; fewer than `length` only at the end of the source
     */
    protected abstract readAt(position: number, length: number): Promise<Buffer>;

    /** Number of bytes between the cursor and the end of the source. */
    public get remaining(): number {
        return this.size - this.offset;
    }

    /** Number of bytes in the window from the cursor on, readable without {@link ByteReader.ensure}. */
    public get buffered(): number {
        return this.windowStart + this.window.length - this.offset;
    }

    /**
     * Makes at least `length` bytes from the cursor readable, fetching at least `chunkSize` bytes when it must fetch.
     * @throws {GgufTruncatedError} when the source ends first (the message names {@link ByteReader.context})
     */
    public async ensure(length: number): Promise<void> {
        const kept = this.window.subarray(this.offset - this.windowStart);
        if (kept.length >= length)
            return;
        if (length > this.remaining)
            throw new GgufTruncatedError(
                `Expected ${length} bytes for ${this.context} at offset ${this.offset} but got ${this.remaining} before the end of the file`
            );

        const fetchFrom = this.offset + kept.length;
        const fetchLength = Math.min(Math.max(length - kept.length, this.chunkSize), this.size - fetchFrom);
        const fetched = await this.readAt(fetchFrom, fetchLength);
        if (fetched.length < length - kept.length)
            throw new GgufTruncatedError(
                `Expected ${length} bytes for ${this.context} at offset ${this.offset} but got ${kept.length + fetched.length} (the file shrank while being read)`
            );

        this.window = kept.length === 0 ? fetched : Buffer.concat([kept, fetched]);
        this.windowStart = this.offset;
    }

    /** Reads an unsigned 8-bit integer. */
    public readUint8(): number {
        return this.window.readUInt8(this.take(1));
    }

    /** Reads a signed 8-bit integer. */
    public readInt8(): number {
        return this.window.readInt8(this.take(1));
    }

    /** Reads an unsigned 16-bit integer. */
    public readUint16(): number {
        return this.window.readUInt16LE(this.take(2));
    }

    /** Reads a signed 16-bit integer. */
    public readInt16(): number {
        return this.window.readInt16LE(this.take(2));
    }

    /** Reads an unsigned 32-bit integer. */
    public readUint32(): number {
        return this.window.readUInt32LE(this.take(4));
    }

    /** Reads a signed 32-bit integer. */
    public readInt32(): number {
        return this.window.readInt32LE(this.take(4));
    }

    /** Reads an unsigned 64-bit integer. */
    public readUint64(): bigint {
        return this.window.readBigUInt64LE(this.take(8));
    }

    /** Reads an unsigned 64-bit integer without moving the cursor. */
    public peekUint64(): bigint {
        const start = this.take(8);
        this.offset -= 8;
        return this.window.readBigUInt64LE(start);
    }

    /** Reads a signed 64-bit integer. */
    public readInt64(): bigint {
        return this.window.readBigInt64LE(this.take(8));
    }

    /** Reads an IEEE 754 single-precision float. */
    public readFloat32(): number {
        return this.window.readFloatLE(this.take(4));
    }

    /** Reads an IEEE 754 double-precision float. */
    public readFloat64(): number {
        return this.window.readDoubleLE(this.take(8));
    }

    /**
     * Reads `length` bytes as UTF-8 text (invalid sequences decode to U+FFFD, as `Buffer#toString` does).
     * @param length - the byte length of the text, already checked against any limit by the caller
     */
    public readUtf8(length: number): string {
        const start = this.take(length);
        return this.window.toString("utf8", start, start + length);
    }

    /**
     * Reads `length` raw bytes.
     * @returns a copy, independent of the reader's window
     */
    public readBytes(length: number): Buffer {
        const start = this.take(length);
        return Buffer.from(this.window.subarray(start, start + length));
    }

    /** Advances the cursor past `length` buffered bytes and returns the index of the first in the window. */
    private take(length: number): number {
        if (length > this.buffered)
            throw new Error(`ByteReader: ${length} bytes read at offset ${this.offset} with only ${this.buffered} buffered; call ensure() first`);

        const start = this.offset - this.windowStart;
        this.offset += length;
        return start;
    }
}
