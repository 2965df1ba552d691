import type {Message} from "../conversation/messages.js";
import {GenGuard} from "../gen/GenGuard.js";
import type {JudgeResult} from "../moderation/Judge.js";
import {genResult, streamPromptResult, streamPromptRule, streamResult} from "../moderation/judgeResults.js";
import {RemoteGuard} from "../remote/RemoteGuard.js";
import {resolveServerPolicy} from "../server/serverPolicy.js";
import type {ServerPolicy} from "../server/serverPolicy.js";
import {StreamGuard} from "../stream/StreamGuard.js";
import {streamSessionMonitor, wholeTextMonitor} from "./ResponseMonitor.js";
import type {ResponseMonitor} from "./ResponseMonitor.js";

/** A guard the integrations take: a model in this process (Gen or Stream) or a `qwenguard serve` elsewhere. */
export type AnyGuard = StreamGuard | GenGuard | RemoteGuard;

/** A monitor opened for a response, and the prompt verdict that came with it (Stream and remote sessions have one). */
export interface OpenedMonitor {
    monitor: ResponseMonitor,
    prompt: JudgeResult | null
}

/**
 * @throws TypeError naming the option when it holds something that is not a guard
 */
export function assertGuard(guard: unknown, name: string): asserts guard is AnyGuard {
    if (!(guard instanceof StreamGuard || guard instanceof GenGuard || guard instanceof RemoteGuard))
        throw new TypeError(`Expected a StreamGuard, a GenGuard or a RemoteGuard for "${name}" but received ` +
            (guard == null ? String(guard) : typeof guard === "object" ? `an instance of ${guard.constructor?.name ?? "Object"}` : typeof guard));
}

/** Judges the last message of a conversation (the user's prompt, or the assistant's answer to it). */
export async function judgeLast(guard: AnyGuard, messages: Message[], policy: ServerPolicy = "strict"): Promise<JudgeResult> {
    if (guard instanceof RemoteGuard)
        return guard.judge(messages, {policy});
    const resolved = resolveServerPolicy(policy);
    if (guard instanceof GenGuard)
        return genResult(await guard.moderate(messages, {policy: resolved.gen}));
    return streamResult(messages, await guard.moderate(messages, {policy: resolved.stream}), streamPromptRule(resolved.gen));
}

/**
 * Opens a monitor for the answer to a conversation (ending with the user turn). A Gen model judges whole texts, so
 * its monitor releases nothing until the answer is complete.
 */
export async function openMonitor(guard: AnyGuard, messages: Message[], policy: ServerPolicy = "strict"): Promise<OpenedMonitor> {
    if (guard instanceof RemoteGuard) {
        const session = await guard.openSession(messages, {policy});
        return {monitor: session, prompt: session.promptVerdict};
    }
    const resolved = resolveServerPolicy(policy);
    if (guard instanceof StreamGuard) {
        const session = await guard.createSession({messages, policy: resolved.stream});
        return {monitor: streamSessionMonitor(session), prompt: streamPromptResult(session.promptVerdict, streamPromptRule(resolved.gen))};
    }
    return {monitor: wholeTextMonitor((text) => judgeLast(guard, [...messages, {role: "assistant", content: text}], policy)), prompt: null};
}
