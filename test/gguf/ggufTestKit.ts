// Shared by the gguf tests: temporary directories, exact-error assertions and a builder for hand-crafted GGUF bytes.

import {mkdtemp, rm} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import type {Test} from "tap";
import {ByteWriter} from "../../gguf/ByteWriter.js";
import {GgufValueType} from "../../gguf/ggmlTypes.js";

/** Creates a temporary directory that is deleted when the test ends. */
export async function tempDir(t: Test): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "qwenguard-gguf-"));
    t.teardown(() => rm(dir, {recursive: true, force: true}));
    return dir;
}

/**
 * Asserts that `action` throws or rejects with an instance of `ErrorClass` whose message is exactly `message` (or
 * matches it, for a pattern).
 * @param action - a promise, or a function that throws or returns a promise
 */
export async function expectError(
    t: Test, action: Promise<unknown> | (() => unknown), ErrorClass: abstract new (...args: never[]) => Error, message: string | RegExp
): Promise<void> {
    try {
        await (typeof action === "function" ? action() : action);
    } catch (error) {
        t.type(error, ErrorClass, `throws ${ErrorClass.name}`);
        if (typeof message === "string")
            t.equal((error as Error).message, message);
        else
            t.match((error as Error).message, message);
        return;
    }
    t.fail(`expected ${ErrorClass.name}: ${String(message)}`);
}

/** Builds GGUF bytes field by field, to craft valid and hostile files by hand. */
export class GgufBytes {
    private readonly out = new ByteWriter();

    /** The four magic bytes, then a version, tensor count and KV count. */
    public header(tensorCount: number | bigint, kvCount: number | bigint, version = 3, magic = "GGUF"): this {
        this.out.writeBytes(Buffer.from(magic, "latin1"));
        this.out.writeUint32(version);
        this.out.writeUint64(BigInt(tensorCount));
        this.out.writeUint64(BigInt(kvCount));
        return this;
    }

    /** A uint32. */
    public u32(value: number): this {
        this.out.writeUint32(value);
        return this;
    }

    /** A uint64. */
    public u64(value: number | bigint): this {
        this.out.writeUint64(BigInt(value));
        return this;
    }

    /** A GGUF string (uint64 byte length, then UTF-8), or just a length when `declaredLength` differs. */
    public str(value: string, declaredLength?: number | bigint): this {
        const bytes = Buffer.from(value, "utf8");
        this.out.writeUint64(BigInt(declaredLength ?? bytes.length));
        this.out.writeBytes(bytes);
        return this;
    }

    /** A metadata entry holding a string. */
    public kvString(key: string, value: string): this {
        return this.str(key).u32(GgufValueType.STRING).str(value);
    }

    /** A metadata entry holding a uint32. */
    public kvUint32(key: string, value: number): this {
        return this.str(key).u32(GgufValueType.UINT32).u32(value);
    }

    /** A tensor info: name, dimensions, ggml type and offset in the data section. */
    public tensorInfo(name: string, ne: readonly (number | bigint)[], type: number, offset: number | bigint): this {
        this.str(name).u32(ne.length);
        for (const n of ne)
            this.u64(n);

        return this.u32(type).u64(offset);
    }

    /** Zero bytes up to the next multiple of `alignment`, then `dataLength` zero bytes of tensor data. */
    public data(alignment: number, dataLength: number): this {
        const padding = (alignment - (this.out.length % alignment)) % alignment;
        this.out.writeBytes(new Uint8Array(padding + dataLength));
        return this;
    }

    /** The bytes built so far (a copy). */
    public build(): Buffer {
        return Buffer.from(this.out.toBuffer());
    }
}
