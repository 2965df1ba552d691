import {validateMessages} from "../conversation/messages.js";
import type {Message} from "../conversation/messages.js";

/**
 * A conversation from parsed JSON: `[messages]`, `{"messages": [...]}`, `{"prompt": string, "response"?: string}`, or
 * `{"message": [...]}` (the layout of the official Qwen3GuardTest records).
 * The conversation must have a user message (every verdict is about a user turn or the answer to one).
 * @throws TypeError saying what is wrong and what was expected
 * @example
 * conversationOf({prompt: "hi", response: "Hello!"}); // [{role: "user", …}, {role: "assistant", …}]
 */
export function conversationOf(value: unknown): Message[] {
    const messages = messagesOf(value);
    if (!messages.some((message) => message.role === "user"))
        throw new TypeError("The conversation has no user message");
    return messages;
}

function messagesOf(value: unknown): Message[] {
    if (Array.isArray(value))
        return validateMessages(value);
    if (value != null && typeof value === "object") {
        const object = value as Record<string, unknown>;
        if ("messages" in object) {
            // both forms at once: which one to judge would be a guess, and the other would be dropped unseen
            const also = ["prompt", "response"].filter((key) => key in object);
            if (also.length > 0)
                throw new TypeError(`Expected either "messages" or "prompt"/"response" but received both ("messages" and ${also.map((key) => `"${key}"`).join(", ")})`);
            return validateMessages(object.messages);
        }
        if ("message" in object && !("prompt" in object) && !("response" in object))
            return validateMessages(object.message, "message");
        if ("response" in object && !("prompt" in object))
            throw new TypeError('Expected "prompt" with "response" (the prompt it answers) but received "response" alone');
        if ("prompt" in object) {
            if (typeof object.prompt !== "string")
                throw new TypeError(`Expected a string for "prompt" but received ${typeName(object.prompt)}`);
            if (object.response === undefined)
                return [{role: "user", content: object.prompt}];
            if (typeof object.response !== "string")
                throw new TypeError(`Expected a string for "response" but received ${typeName(object.response)}`);
            return [{role: "user", content: object.prompt}, {role: "assistant", content: object.response}];
        }
    }
    throw new TypeError(`Expected {"prompt": string, "response"?: string}, {"messages": [...]}, {"message": [...]} or [messages] but received ${typeName(value)}`);
}

function typeName(value: unknown): string {
    if (value === null)
        return "null";
    if (Array.isArray(value))
        return "an array";
    if (typeof value === "object")
        return `an object with keys ${JSON.stringify(Object.keys(value as object).slice(0, 5))}`;
    return typeof value === "string" ? "a string" : `${typeof value} ${String(value)}`;
}
