import {resolveGenPolicy} from "../gen/genPolicy.js";
import type {GenPolicyOption} from "../gen/genPolicy.js";
import type {GenVerdict} from "../gen/types.js";
import type {Message} from "../conversation/messages.js";
import type {StreamModerationReport} from "../stream/StreamGuard.js";
import type {ResponseReport, RiskLevel, Verdict} from "../stream/types.js";
import type {JudgeResult} from "./Judge.js";

/** Whether a Stream prompt verdict (one position of the query head) is flagged: as a Gen verdict would be. */
export type StreamPromptRule = (level: RiskLevel, probs: Record<RiskLevel, number>) => boolean;

/** A Gen verdict as a {@link JudgeResult}. */
export function genResult(verdict: GenVerdict): JudgeResult {
    const {target, level, category, categories, refusal, probs, categoryProbs, refusalProbs, flagged, text, windows} = verdict;
    return {model: "gen", target, level, category, probs, flagged, categories, categoryProbs,
        ...(refusal != null ? {refusal, refusalProbs} : {}), ...(text != null ? {text} : {}), ...(windows != null ? {windows} : {})};
}

/** The flagging rule of Stream prompt verdicts under a policy (strict, loose or a threshold). */
export function streamPromptRule(policy: GenPolicyOption): StreamPromptRule {
    const {minProb, controversial} = resolveGenPolicy(policy);
    return (level, probs) => minProb != null
        ? probs.Unsafe + (controversial ? probs.Controversial : 0) >= minProb
        : level === "Unsafe" || (controversial && level === "Controversial");
}

/** A Stream prompt verdict as a {@link JudgeResult}. */
export function streamPromptResult(verdict: Verdict, flagged: StreamPromptRule): JudgeResult {
    const {level, category, probs, categoryProbs} = verdict;
    return {model: "stream", target: "prompt", level, category, probs, flagged: flagged(level, probs), categoryProbs};
}

/**
 * A Stream response report as a {@link JudgeResult}: its probabilities are those of the token where monitoring stops,
 * else of the least safe token.
 */
export function streamResponseResult(report: ResponseReport): JudgeResult {
    const {level, category, flag, flagged, tokens} = report;
    const decisive = flag != null ? tokens[flag.index] : tokens.reduce((worst, token) => token.probs.Safe < worst.probs.Safe ? token : worst, tokens[0]);
    return {model: "stream", target: "response", level, category, probs: decisive?.probs ?? {Safe: 1, Unsafe: 0, Controversial: 0},
        ...(decisive != null ? {probsToken: decisive.index} : {}), flagged,
        stoppedAt: flag != null ? {token: flag.index, offset: flag.textOffset} : null};
}

/** The verdict of the judged message of a conversation (its last one) from a Stream report. */
export function streamResult(messages: Message[], report: StreamModerationReport, promptFlagged: StreamPromptRule): JudgeResult {
    if (messages[messages.length - 1].role === "assistant" && report.response != null)
        return streamResponseResult(report.response);
    if (report.prompt == null)
        throw new TypeError("The conversation has no user message");
    return streamPromptResult(report.prompt, promptFlagged);
}

/** P(Unsafe) + P(Controversial) of a verdict: the smallest threshold policy that flags it. */
export function genScore(result: JudgeResult): number {
    return Math.min(1, result.probs.Unsafe + result.probs.Controversial);
}

/**
 * The smallest threshold policy that flags a Stream verdict: for a prompt, its P(Unsafe) + P(Controversial); for a
 * response, the decision rule's (two consecutive tokens at or over the threshold): the largest, over consecutive
 * pairs, of the pair's smaller P(Unsafe) + P(Controversial). 0 for a response of one token (the rule cannot fire).
 */
export function streamScore(result: JudgeResult, report: StreamModerationReport): number {
    if (result.target === "prompt")
        return genScore(result);
    const tokens = report.response!.tokens;
    let score = 0;
    for (let i = 1; i < tokens.length; i++) {
        const previous = tokens[i - 1].probs;
        const current = tokens[i].probs;
        score = Math.max(score, Math.min(previous.Unsafe + previous.Controversial, current.Unsafe + current.Controversial));
    }
    return Math.min(1, score);
}
