/** A growable little-endian byte buffer with typed writes, used to serialize headers before writing them at once. */
export class ByteWriter {
    private buffer = Buffer.alloc(4096);
    private used = 0;

    /** Number of bytes written so far. */
    public get length(): number {
        return this.used;
    }

    /** Writes an unsigned 8-bit integer. */
    public writeUint8(value: number): void {
        const at = this.reserve(1);
        this.buffer.writeUInt8(value, at);
    }

    /** Writes a signed 8-bit integer. */
    public writeInt8(value: number): void {
        const at = this.reserve(1);
        this.buffer.writeInt8(value, at);
    }

    /** Writes an unsigned 16-bit integer. */
    public writeUint16(value: number): void {
        const at = this.reserve(2);
        this.buffer.writeUInt16LE(value, at);
    }

    /** Writes a signed 16-bit integer. */
    public writeInt16(value: number): void {
        const at = this.reserve(2);
        this.buffer.writeInt16LE(value, at);
    }

    /** Writes an unsigned 32-bit integer. */
    public writeUint32(value: number): void {
        const at = this.reserve(4);
        this.buffer.writeUInt32LE(value, at);
    }

    /** Writes a signed 32-bit integer. */
    public writeInt32(value: number): void {
        const at = this.reserve(4);
        this.buffer.writeInt32LE(value, at);
    }

    /** Writes an unsigned 64-bit integer. */
    public writeUint64(value: bigint): void {
        const at = this.reserve(8);
        this.buffer.writeBigUInt64LE(value, at);
    }

    /** Writes a signed 64-bit integer. */
    public writeInt64(value: bigint): void {
        const at = this.reserve(8);
        this.buffer.writeBigInt64LE(value, at);
    }

    /** Writes an IEEE 754 single-precision float (`value` rounded to the nearest float32). */
    public writeFloat32(value: number): void {
        const at = this.reserve(4);
        this.buffer.writeFloatLE(value, at);
    }

    /** Writes an IEEE 754 double-precision float. */
    public writeFloat64(value: number): void {
        const at = this.reserve(8);
        this.buffer.writeDoubleLE(value, at);
    }

    /** Writes raw bytes. */
    public writeBytes(bytes: Uint8Array): void {
        const at = this.reserve(bytes.length);
        this.buffer.set(bytes, at);
    }

    /**
     * Drops everything written after the first `length` bytes (to undo a partly written record).
     * @param length - the length to go back to, at most {@link ByteWriter.length}
     */
    public truncate(length: number): void {
        this.used = Math.min(length, this.used);
    }

    /** The bytes written so far (a view, valid until the next write). */
    public toBuffer(): Buffer {
        return this.buffer.subarray(0, this.used);
    }

    /** Makes room for `length` more bytes and returns where they start (read `this.buffer` after: growing replaces it). */
    private reserve(length: number): number {
        const start = this.used;
        if (start + length > this.buffer.length) {
            const grown = Buffer.alloc(Math.max(this.buffer.length * 2, start + length));
            this.buffer.copy(grown, 0, 0, start);
            this.buffer = grown;
        }
        this.used += length;
        return start;
    }
}
