import type {GenTarget} from "./genTemplate.js";

/** A request's share of the guard: a sequence of its target, and KV cells. */
export interface RequestSlot {
    sequence: number,
    /** Gives the sequence and the cells back (once). */
    release(): void
}

interface Waiting {
    target: GenTarget,
    cells: number,
    grant: (slot: RequestSlot) => void
}

/**
 * Admission of Gen requests: each needs a free sequence of its target AND its KV cells out of the guard's one budget
 * (all requests together never hold more than `budget` cells). A request that cannot start waits; waiting requests
 * start in arrival order, except that one waiting only for a sequence of its target lets later requests of the other
 * target pass. One waiting for cells holds back every later one, so a long request is never starved by short ones.
 */
export class RequestSlots {
    private readonly free: Record<GenTarget, number[]>;
    private readonly waiting: Waiting[] = [];
    private freeCells: number;
    /** The most cells requests held at once so far. */
    peakCells = 0;

    /**
     * @param sequences - the native sequence ids that serve each target
     * @param budget - the KV cells all requests may hold at once
     */
    constructor(sequences: Record<GenTarget, readonly number[]>, readonly budget: number) {
        this.free = {prompt: [...sequences.prompt], response: [...sequences.response]};
        this.freeCells = budget;
    }

    /** Cells no request holds now. */
    get availableCells(): number {
        return this.freeCells;
    }

    /**
     * Waits for a sequence of `target` and `cells` KV cells.
     * @throws RangeError when `cells` exceeds the whole budget (the caller checks the request's limit first)
     */
    acquire(target: GenTarget, cells: number): Promise<RequestSlot> {
        if (cells > this.budget)
            return Promise.reject(new RangeError(`Expected a request of at most ${this.budget} KV cells (the guard's budget) but it needs ${cells}`));
        return new Promise((grant) => {
            this.waiting.push({target, cells, grant});
            this.admit();
        });
    }

    private admit(): void {
        for (let i = 0; i < this.waiting.length;) {
            const {target, cells, grant} = this.waiting[i];
            if (cells > this.freeCells)
                return;
            const sequence = this.free[target].pop();
            if (sequence == null) {
                i++;
                continue;
            }
            this.waiting.splice(i, 1);
            this.freeCells -= cells;
            this.peakCells = Math.max(this.peakCells, this.budget - this.freeCells);
            let released = false;
            grant({
                sequence,
                release: () => {
                    if (released)
                        return;
                    released = true;
                    this.free[target].push(sequence);
                    this.freeCells += cells;
                    this.admit();
                }
            });
        }
    }
}
