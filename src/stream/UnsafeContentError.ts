import type {Flag, ResponseReport} from "./types.js";

/** Thrown by {@link StreamGuard.monitor} when the decision rule flags the response: the stream stops there. */
export class UnsafeContentError extends Error {
    override name = "UnsafeContentError";

    constructor(readonly flag: Flag, readonly report: ResponseReport) {
        super(`The response was flagged ${flag.level}${flag.category != null ? ` (${flag.category})` : ""} at token ${flag.index}, ` +
            `text offset ${flag.textOffset}`);
    }
}
