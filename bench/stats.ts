// Summaries of repeated measurements: the median as the figure, the extremes as its spread.

/** A figure measured several times: the median and the spread of the repetitions. */
export interface Summary {
    /** The median of the samples. */
    median: number,
    /** The smallest sample. */
    min: number,
    /** The largest sample. */
    max: number,
    /** Every sample, in the order measured. */
    samples: number[]
}

/**
 * The median of a non-empty list (the mean of the two middle values for an even count).
 * @throws Error for an empty list
 */
export function median(values: readonly number[]): number {
    if (values.length === 0)
        throw new Error("Expected at least one sample but received none");
    const sorted = [...values].sort((a, b) => a - b);
    const middle = sorted.length >> 1;
    return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * Summarises samples: median, min, max.
 * @throws Error for an empty list
 */
export function summarize(samples: readonly number[]): Summary {
    return {median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples: [...samples]};
}

/**
 * Combines two series measured in the same rounds round by round (`op(a[i], b[i])`), summarised. Pairing the rounds
 * cancels load that drifts slowly over the run (the machine is shared).
 * @throws Error when the series differ in length or are empty
 */
export function paired(a: readonly number[], b: readonly number[], op: (a: number, b: number) => number): Summary {
    if (a.length !== b.length)
        throw new Error(`Expected two series of the same length but received ${a.length} and ${b.length}`);
    return summarize(a.map((value, i) => op(value, b[i])));
}

/** Per-round ratios `numerator[i] / denominator[i]`, summarised (see {@link paired}). */
export function pairedRatio(numerator: readonly number[], denominator: readonly number[]): Summary {
    return paired(numerator, denominator, (a, b) => a / b);
}

/** Applies `f` to every value of a summary (e.g. ms/token → tokens/s; the extremes swap when `f` decreases). */
export function mapSummary(summary: Summary, f: (value: number) => number): Summary {
    return summarize(summary.samples.map(f));
}

/**
 * Summarises step times (per round, per step): each round's median step time, then the median and spread of those.
 * The median step is robust to the few steps a preemption lands on.
 */
export function summarizeSteps(samples: readonly number[][]): Summary {
    return summarize(samples.map(median));
}

/**
 * Combines two trials' step times step by step (`op(a[r][i], b[r][i])`: same round, same step, milliseconds apart),
 * takes each round's median, and summarises those.
 * @throws Error when the shapes differ
 */
export function pairedSteps(a: readonly number[][], b: readonly number[][], op: (a: number, b: number) => number): Summary {
    if (a.length !== b.length || a.some((round, r) => round.length !== b[r].length))
        throw new Error("Expected two step series of the same shape");
    return summarize(a.map((round, r) => median(round.map((value, i) => op(value, b[r][i])))));
}
