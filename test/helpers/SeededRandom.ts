// A small deterministic pseudo-random generator (sfc32) for fixture weights: the same seed gives the same
// numbers on every platform and Node version, unlike Math.random.

/** Deterministic pseudo-random numbers from a 32-bit seed (Chris Doty-Humphrey's sfc32). */
export class SeededRandom {
    private a: number;
    private b: number;
    private c: number;
    private d: number;

    /**
     * @param seed - any 32-bit integer; equal seeds give equal sequences
     */
    public constructor(seed: number) {
        this.a = 0x9e3779b9;
        this.b = 0x243f6a88;
        this.c = 0xb7e15162;
        this.d = seed >>> 0;
        for (let i = 0; i < 12; i++)
            this.nextUint32();
    }

    /** The next number, uniform over the 32-bit unsigned integers. */
    public nextUint32(): number {
        const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
        this.d = (this.d + 1) >>> 0;
        this.a = this.b ^ (this.b >>> 9);
        this.b = (this.c + (this.c << 3)) >>> 0;
        this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
        this.c = (this.c + t) >>> 0;
        return t;
    }

    /** The next number, uniform in [0, 1). */
    public nextFloat(): number {
        return this.nextUint32() / 4294967296;
    }

    /**
     * The next number, uniform in [-scale, scale).
     * @param scale - half the width of the interval
     */
    public uniform(scale: number): number {
        return (this.nextFloat() * 2 - 1) * scale;
    }

    /**
     * The next integer, uniform in [0, n).
     * @param n - how many values, at least 1
     */
    public int(n: number): number {
        return Math.floor(this.nextFloat() * n);
    }
}
