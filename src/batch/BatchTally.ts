import type {RiskLevel} from "../stream/types.js";

/** Counts over a batch's output: by level, by category, flagged, errors. */
export class BatchTally {
    records = 0;
    errors = 0;
    flagged = 0;
    tokens = 0;
    readonly byLevel: Record<RiskLevel, number> = {Safe: 0, Controversial: 0, Unsafe: 0};
    readonly byCategory: Record<string, number> = {};

    /** Counts one output line (a verdict or an error), and the tokens the model read for it (0 for a resumed line). */
    add(line: {error?: unknown, level?: unknown, category?: unknown, flagged?: unknown}, tokens = 0): void {
        this.records++;
        this.tokens += tokens;
        if (line.error != null) {
            this.errors++;
            return;
        }
        if (line.level === "Safe" || line.level === "Controversial" || line.level === "Unsafe")
            this.byLevel[line.level]++;
        if (typeof line.category === "string")
            this.byCategory[line.category] = (this.byCategory[line.category] ?? 0) + 1;
        if (line.flagged === true)
            this.flagged++;
    }

    /** A plain copy (for progress reports and the summary). */
    snapshot(): BatchCounts {
        return {records: this.records, errors: this.errors, flagged: this.flagged, tokens: this.tokens,
            byLevel: {...this.byLevel}, byCategory: {...this.byCategory}};
    }
}

export interface BatchCounts {
    /** Output lines: verdicts and errors. */
    records: number,
    errors: number,
    flagged: number,
    /** Tokens the model read (this run only: resumed lines count none). */
    tokens: number,
    byLevel: Record<RiskLevel, number>,
    byCategory: Record<string, number>
}
