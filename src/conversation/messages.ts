/** One turn of a conversation, as chat APIs exchange them. */
export interface Message {
    role: "system" | "user" | "assistant",
    content: string
}

const roles: ReadonlySet<string> = new Set(["system", "user", "assistant"]);

/**
 * Checks a conversation given by a user and returns it typed.
 * @throws TypeError naming the message and field that is wrong, and what was expected
 */
export function validateMessages(messages: unknown, what = "messages"): Message[] {
    if (!Array.isArray(messages))
        throw new TypeError(`Expected an array of {role, content} for "${what}" but received ${describeValue(messages)}`);
    return messages.map((message: unknown, index) => {
        const name = `${what}[${index}]`;
        if (message == null || typeof message !== "object")
            throw new TypeError(`Expected an object {role, content} for "${name}" but received ${describeValue(message)}`);
        const {role, content} = message as Record<string, unknown>;
        if (typeof role !== "string" || !roles.has(role))
            throw new TypeError(`Expected "system", "user" or "assistant" for "${name}.role" but received ${describeValue(role)}`);
        if (typeof content !== "string")
            throw new TypeError(`Expected a string for "${name}.content" but received ${describeValue(content)}`);
        return {role: role as Message["role"], content};
    });
}

/** A short description of a received value for error messages. */
export function describeValue(value: unknown): string {
    if (value === null)
        return "null";
    if (Array.isArray(value))
        return `an array of length ${value.length}`;
    if (typeof value === "string")
        return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
    if (typeof value === "object")
        return "an object";
    return String(value);
}
