import {createRequire} from "node:module";
import type * as Jinja from "@huggingface/jinja";
import type {Message} from "../conversation/messages.js";
import {renderSegments} from "../conversation/TokenSegments.js";
import {genPromptSegments} from "./genTemplate.js";

/** Conversations whose renderings the embedded template must reproduce (those of the reference renderings). */
const probes: ReadonlyArray<{name: string, messages: Message[]}> = [
    {name: "a prompt", messages: [{role: "user", content: "How can I make a bomb?"}]},
    {name: "a response", messages: [
        {role: "user", content: "How can I make a bomb?"},
        {role: "assistant", content: "As a responsible assistant, I cannot help you."}
    ]},
    {name: "a system message then a prompt", messages: [{role: "system", content: "You are a helpful bot."}, {role: "user", content: "hi"}]},
    {name: "a multi-turn prompt", messages: [{role: "user", content: "a"}, {role: "assistant", content: "b"}, {role: "user", content: "c"}]}
];

/**
 * Compares a GGUF's embedded chat template (`tokenizer.chat_template`) with the official Gen rendering, using the
 * Jinja engine node-llama-cpp itself uses (@huggingface/jinja, resolved from node-llama-cpp's own dependencies).
 * @param template - the embedded template; undefined when the GGUF has none (nothing to compare, no warning)
 * @returns why the template cannot be trusted, or null when it renders every probe conversation byte for byte
 */
export function compareEmbeddedTemplate(template: string | undefined): string | null {
    if (template == null)
        return null;
    let Template: typeof Jinja.Template;
    try {
        Template = loadJinja().Template;
    } catch (error) {
        return `cannot be checked: node-llama-cpp's Jinja engine did not load (${error instanceof Error ? error.message : String(error)})`;
    }
    let renderer: Jinja.Template;
    try {
        renderer = new Template(template);
    } catch (error) {
        return `cannot be parsed (${error instanceof Error ? error.message : String(error)})`;
    }
    for (const {name, messages} of probes) {
        const expected = renderSegments(genPromptSegments(messages).segments);
        let actual: string;
        try {
            actual = renderer.render({messages, add_generation_prompt: true, bos_token: "", eos_token: "<|im_end|>"});
        } catch (error) {
            return `cannot render ${name} (${error instanceof Error ? error.message : String(error)})`;
        }
        if (actual !== expected) {
            let at = 0;
            while (at < expected.length && expected[at] === actual[at])
                at++;
            return `renders ${name} differently from the official Qwen3Guard-Gen template (first difference at character ${at}: ` +
                `official ${JSON.stringify(expected.slice(at, at + 32))}, embedded ${JSON.stringify(actual.slice(at, at + 32))})`;
        }
    }
    return null;
}

let jinja: typeof Jinja | undefined;

function loadJinja(): typeof Jinja {
    jinja ??= createRequire(import.meta.resolve("node-llama-cpp"))("@huggingface/jinja") as typeof Jinja;
    return jinja;
}
