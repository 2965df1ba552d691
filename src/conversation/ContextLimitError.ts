/** A conversation or a response that does not fit the context: the message names its token count and the limit. */
export class ContextLimitError extends Error {
    constructor(message: string, readonly tokens: number, readonly limit: number) {
        super(message);
        this.name = "ContextLimitError";
    }
}
