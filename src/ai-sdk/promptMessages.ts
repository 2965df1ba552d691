import type {LanguageModelV4Prompt} from "@ai-sdk/provider";
import type {Message} from "../conversation/messages.js";

/**
 * The conversation a guard judges from an AI SDK call's prompt: system messages as they are, the text parts of user
 * and assistant messages (joined with newlines; file parts are not judged), assistant reasoning only when asked
 * (`judgeReasoning`), tool calls and tool results left out (the Qwen3Guard templates have no such role).
 */
export function promptMessages(prompt: LanguageModelV4Prompt, judgeReasoning: boolean): Message[] {
    if (!Array.isArray(prompt))
        throw new TypeError(`Expected the call's prompt to be an array of messages but received ${typeof prompt}`);
    const messages: Message[] = [];
    for (const message of prompt) {
        if (message.role === "system") {
            messages.push({role: "system", content: message.content});
            continue;
        }
        if (message.role !== "user" && message.role !== "assistant")
            continue;
        const texts = (message.content as Array<{type: string, text?: string}>)
            .filter((part) => part.type === "text" || (judgeReasoning && part.type === "reasoning"))
            .map((part) => part.text ?? "");
        if (message.role === "assistant" && texts.join("").length === 0)
            continue; // tool calls only
        messages.push({role: message.role, content: texts.join("\n")});
    }
    return messages;
}
