import type {Message} from "../conversation/messages.js";
import {describeValue} from "../conversation/messages.js";

/**
 * The conversation a guard judges from an OpenAI chat request's `messages`: `system` and `developer` turns become
 * system messages, `user` and `assistant` turns keep their role, and `tool` / `function` results are left out (the
 * Qwen3Guard templates have no such role). Content may be a string, an array of parts (their text parts are joined
 * with newlines; image, audio and file parts are not judged) or null (an assistant turn of tool calls only, left out).
 * @throws TypeError naming the message and field that is wrong
 */
export function chatConversation(messages: unknown): Message[] {
    if (!Array.isArray(messages))
        throw new TypeError(`Expected an array of messages for "messages" but received ${describeValue(messages)}`);
    const conversation: Message[] = [];
    messages.forEach((message: unknown, index) => {
        const name = `messages[${index}]`;
        if (message == null || typeof message !== "object")
            throw new TypeError(`Expected an object {role, content} for "${name}" but received ${describeValue(message)}`);
        const {role, content} = message as Record<string, unknown>;
        if (role === "tool" || role === "function")
            return;
        const guardRole = role === "system" || role === "developer" ? "system" : role === "user" || role === "assistant" ? role : null;
        if (guardRole == null)
            throw new TypeError(`Expected "system", "developer", "user", "assistant", "tool" or "function" for "${name}.role" but received ${describeValue(role)}`);
        const text = contentText(content, `${name}.content`);
        if (text == null || (guardRole === "assistant" && text.length === 0))
            return;
        conversation.push({role: guardRole, content: text});
    });
    return conversation;
}

/** The conversation up to and including its last user message: what an answer to it responds to. */
export function upToLastUser(conversation: Message[]): Message[] {
    const lastUser = conversation.map((message) => message.role).lastIndexOf("user");
    if (lastUser < 0)
        throw new TypeError('Expected a "user" message in "messages": the guard judges the user\'s prompt and the answer to it');
    return conversation.slice(0, lastUser + 1);
}

/**
 * What an answer is judged against: the conversation up to its last user message, and the text of the assistant
 * messages after it (a prefill the model continues: judged as the start of the response).
 * @throws TypeError when there is no user message, or something other than assistant messages follows the last one
 */
export function splitConversation(messages: Message[]): {conversation: Message[], responsePrefix: string} {
    const conversation = upToLastUser(messages);
    const after = messages.slice(conversation.length);
    if (after.some((message) => message.role !== "assistant"))
        throw new TypeError('Expected only assistant messages (a prefill of the answer) after the last user message, ' +
            `but received ${after.map((message) => message.role).join(", ")}`);
    return {conversation, responsePrefix: after.map((message) => message.content).join("")};
}

/** The text of an OpenAI message content: a string, the text parts of an array, or null for no content. */
export function contentText(content: unknown, name: string): string | null {
    if (content == null)
        return null;
    if (typeof content === "string")
        return content;
    if (!Array.isArray(content))
        throw new TypeError(`Expected a string, an array of content parts or null for "${name}" but received ${describeValue(content)}`);
    const texts: string[] = [];
    content.forEach((part: unknown, index) => {
        if (part == null || typeof part !== "object" || typeof (part as {type?: unknown}).type !== "string")
            throw new TypeError(`Expected a content part {type, …} for "${name}[${index}]" but received ${describeValue(part)}`);
        const {type, text} = part as {type: string, text?: unknown};
        if (type !== "text")
            return;
        if (typeof text !== "string")
            throw new TypeError(`Expected a string for "${name}[${index}].text" but received ${describeValue(text)}`);
        texts.push(text);
    });
    return texts.join("\n");
}
