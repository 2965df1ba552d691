/**
 * Finds two items whose byte ranges overlap, checking them in offset order; empty ranges overlap nothing.
 * @param items - things that occupy bytes of a file
 * @param range - the `[offset, length]` of an item
 * @returns the first overlapping pair as `[earlier, later]`, or undefined when no ranges overlap
 */
export function findOverlap<T>(items: readonly T[], range: (item: T) => readonly [number, number]): [T, T] | undefined {
    const sorted = items.filter((item) => range(item)[1] > 0).sort((a, b) => range(a)[0] - range(b)[0]);
    for (let index = 1; index < sorted.length; index++) {
        const [previousOffset, previousLength] = range(sorted[index - 1]);
        if (range(sorted[index])[0] < previousOffset + previousLength)
            return [sorted[index - 1], sorted[index]];
    }

    return undefined;
}
