// The measurement loop: candidates and baselines take turns, round after round, so that load from other jobs on a
// shared machine falls on all of them alike.

/** One thing measured: `run` does one repetition and returns its figure (e.g. ms per token). */
export interface Trial {
    name: string,
    run(): Promise<number>
}

/** How many rounds to run. */
export interface RoundOptions {
    /** Untimed rounds first (caches, page faults, the allocator). */
    warmup: number,
    /** Timed rounds: each trial's figure is the median of this many samples. */
    rounds: number,
    /** Called after every timed round (progress). */
    onRound?: (round: number) => void
}

/**
 * Runs every trial once per round, starting each round one trial further along (A B C, B C A, C A B …) so that no
 * trial always runs right after the same other one.
 * @returns the samples of each trial by name, in round order (round i of every trial ran in the same round)
 */
export async function interleave(trials: readonly Trial[], {warmup, rounds, onRound}: RoundOptions): Promise<Record<string, number[]>> {
    const samples: Record<string, number[]> = Object.fromEntries(trials.map((trial) => [trial.name, []]));
    for (let round = -warmup; round < rounds; round++) {
        const shift = ((round % trials.length) + trials.length) % trials.length;
        for (let i = 0; i < trials.length; i++) {
            const trial = trials[(i + shift) % trials.length];
            const value = await trial.run();
            if (round >= 0)
                samples[trial.name].push(value);
        }
        if (round >= 0)
            onRound?.(round);
    }
    return samples;
}

/**
 * Times `work` in milliseconds (wall clock).
 * @returns the elapsed time and what `work` returned
 */
export async function timed<T>(work: () => Promise<T>): Promise<{ms: number, value: T}> {
    const start = performance.now();
    const value = await work();
    return {ms: performance.now() - start, value};
}

/** One thing measured token by token: each repetition is `start`, then `steps` calls of `step`, then `finish`. */
export interface StepTrial {
    name: string,
    /** Prepares a repetition (untimed). */
    start?(): Promise<void>,
    /** Does step `index` and returns its time in milliseconds. */
    step(index: number): Promise<number>,
    /** Undoes the repetition (untimed), e.g. drops the tokens it added. */
    finish(): Promise<void>
}

/**
 * Interleaves trials at the finest grain: in every round, step i of every trial runs before step i + 1 of any, in an
 * order rotated from step to step. Neighbouring steps of different trials are then milliseconds apart, so a burst of
 * load from other jobs falls on all of them alike (a whole-repetition interleave cannot promise that when one
 * repetition takes a second).
 * @returns per trial name, per timed round, the time of every step (ms)
 */
export async function interleaveSteps(trials: readonly StepTrial[], {warmup, rounds, onRound}: RoundOptions, steps: number): Promise<Record<string, number[][]>> {
    const samples: Record<string, number[][]> = Object.fromEntries(trials.map((trial) => [trial.name, []]));
    for (let round = -warmup; round < rounds; round++) {
        const times = trials.map(() => [] as number[]);
        for (const trial of trials)
            await trial.start?.();
        for (let step = 0; step < steps; step++) {
            const shift = (step + round + warmup) % trials.length;
            for (let i = 0; i < trials.length; i++) {
                const k = (i + shift) % trials.length;
                times[k].push(await trials[k].step(step));
            }
        }
        for (const trial of trials)
            await trial.finish();
        if (round >= 0) {
            trials.forEach((trial, k) => samples[trial.name].push(times[k]));
            onRound?.(round);
        }
    }
    return samples;
}
