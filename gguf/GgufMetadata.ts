import {GgufMetadataTypeError, GgufMissingKeyError} from "./errors.js";
import {GgufValueType} from "./ggmlTypes.js";

/** A GGUF array: its element type and its elements (each a {@link GgufArray} itself when `elementType` is ARRAY). */
export interface GgufArray {
    readonly elementType: GgufValueType;
    readonly values: readonly GgufValue[];
}

/**
 * A metadata value as JavaScript holds it: integers up to 32 bits and floats as `number`, UINT64 and INT64 as `bigint`,
 * BOOL as `boolean`, STRING as `string`, ARRAY as {@link GgufArray}.
 */
export type GgufValue = number | bigint | boolean | string | GgufArray;

/** One metadata entry: the declared value type and the value. */
export interface GgufKv {
    readonly type: GgufValueType;
    readonly value: GgufValue;
}

/** The JavaScript type of a value of GGUF value type `T`. */
export type GgufValueOf<T extends GgufValueType> =
    T extends GgufValueType.STRING ? string
        : T extends GgufValueType.BOOL ? boolean
            : T extends GgufValueType.UINT64 | GgufValueType.INT64 ? bigint
                : T extends GgufValueType.ARRAY ? GgufArray
                    : number;

/**
 * Describes the type of an entry for messages: `UINT32`, or `ARRAY of STRING` for arrays.
 * @param kv - a metadata entry
 */
export function describeGgufType(kv: GgufKv): string {
    const name = GgufValueType[kv.type];
    return kv.type === GgufValueType.ARRAY ? `${name} of ${GgufValueType[(kv.value as GgufArray).elementType]}` : name;
}

/**
 * The metadata of a GGUF file, in file order, with getters that check the value type.
 *
 * @example
 * const {metadata} = await readGguf("model.gguf");
 * const arch = metadata.getString("general.architecture");
 * const contextLength = metadata.getUint32(`${arch}.context_length`);
 */
export class GgufMetadata {
    /** Every entry by key, in file order. */
    public readonly entries: ReadonlyMap<string, GgufKv>;

    /** @param entries - key → entry, in file order */
    public constructor(entries: ReadonlyMap<string, GgufKv>) {
        this.entries = entries;
    }

    /** Whether `key` is present (whatever its type). */
    public has(key: string): boolean {
        return this.entries.has(key);
    }

    /**
     * The value of `key`, which must be present and of type `type`.
     * @throws {GgufMissingKeyError} when the key is absent
     * @throws {GgufMetadataTypeError} when the key holds another type
     */
    public get<T extends GgufValueType>(key: string, type: T): GgufValueOf<T> {
        const value = this.find(key, type);
        if (value === undefined)
            throw new GgufMissingKeyError(`Expected metadata key "${key}" of type ${GgufValueType[type]} but got no such key`);

        return value;
    }

    /**
     * The value of `key` if present; it must then be of type `type`.
     * @returns the value, or undefined when the key is absent
     * @throws {GgufMetadataTypeError} when the key holds another type
     */
    public find<T extends GgufValueType>(key: string, type: T): GgufValueOf<T> | undefined {
        const kv = this.entries.get(key);
        if (kv === undefined)
            return undefined;

        if (kv.type !== type)
            throw new GgufMetadataTypeError(
                `Expected metadata key "${key}" to be of type ${GgufValueType[type]} but got ${describeGgufType(kv)}`
            );

        return kv.value as GgufValueOf<T>;
    }

    /** The STRING value of `key`; throws like {@link GgufMetadata.get}. */
    public getString(key: string): string {
        return this.get(key, GgufValueType.STRING);
    }

    /** The UINT32 value of `key`; throws like {@link GgufMetadata.get}. */
    public getUint32(key: string): number {
        return this.get(key, GgufValueType.UINT32);
    }

    /** The UINT64 value of `key`; throws like {@link GgufMetadata.get}. */
    public getUint64(key: string): bigint {
        return this.get(key, GgufValueType.UINT64);
    }

    /** The FLOAT32 value of `key`; throws like {@link GgufMetadata.get}. */
    public getFloat32(key: string): number {
        return this.get(key, GgufValueType.FLOAT32);
    }

    /** The BOOL value of `key`; throws like {@link GgufMetadata.get}. */
    public getBool(key: string): boolean {
        return this.get(key, GgufValueType.BOOL);
    }

    /**
     * The ARRAY value of `key`, optionally checking its element type.
     * @param key - the metadata key
     * @param elementType - the element type the array must have, if given
     * @throws {GgufMissingKeyError} when the key is absent
     * @throws {GgufMetadataTypeError} when the key is not an array, or one of another element type
     */
    public getArray(key: string, elementType?: GgufValueType): GgufArray {
        const array = this.get(key, GgufValueType.ARRAY);
        if (elementType !== undefined && array.elementType !== elementType)
            throw new GgufMetadataTypeError(
                `Expected metadata key "${key}" to be of type ARRAY of ${GgufValueType[elementType]} but got ARRAY of ${GgufValueType[array.elementType]}`
            );

        return array;
    }

    /** The elements of the ARRAY of STRING at `key`; throws like {@link GgufMetadata.getArray}. */
    public getStringArray(key: string): string[] {
        return this.getArray(key, GgufValueType.STRING).values as string[];
    }
}
