/**
 * Maps an (async) iterable with up to `concurrency` calls of `work` at once and yields the results in input order.
 * Memory holds at most `concurrency` items, running or finished and waiting for an earlier one. Stops pulling new
 * items once `signal` aborts (the items already started still finish and are yielded).
 * @param work - must not reject for one item's failure: encode failures in its result
 * @param onStop - called when it stops early, before it waits for the work in flight (e.g. to release work held back)
 */
export async function* mapInOrder<T, R>(items: AsyncIterable<T> | Iterable<T>, concurrency: number, work: (item: T) => Promise<R>,
    signal?: AbortSignal, onStop?: () => void): AsyncGenerator<R> {
    const iterator = Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : (items as Iterable<T>)[Symbol.iterator]();
    const pending: Promise<R>[] = [];
    let exhausted = false;
    const fill = async () => {
        while (!exhausted && pending.length < concurrency && signal?.aborted !== true) {
            const next = await iterator.next();
            if (next.done === true) {
                exhausted = true;
                return;
            }
            const result = work(next.value);
            result.catch(() => {}); // awaited in order below; a later one failing first must not go unhandled
            pending.push(result);
        }
    };
    try {
        await fill();
        while (pending.length > 0) {
            yield await pending.shift()!;
            await fill();
        }
    } finally {
        // stopped early (the consumer left, or an item or the input failed): let the work in flight end first, so
        // that nothing runs on after the caller has moved on (e.g. disposed the model)
        if (pending.length > 0)
            onStop?.();
        await Promise.allSettled(pending);
        if (!exhausted)
            await iterator.return?.();
    }
}
