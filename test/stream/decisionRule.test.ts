import t from "tap";
import {DecisionRule, resolvePolicy, responseLevel} from "../../src/stream/DecisionRule.js";
import type {RiskLevel, Verdict} from "../../src/index.js";

const verdict = (level: RiskLevel, category: string | null = level === "Safe" ? null : "Violent"): Verdict => ({
    level, category,
    probs: {Safe: level === "Safe" ? 0.8 : 0.1, Unsafe: level === "Unsafe" ? 0.8 : 0.1, Controversial: level === "Controversial" ? 0.8 : 0.1},
    categoryProbs: {Violent: 0.9, PII: 0.1}
});
const S = verdict("Safe"), U = verdict("Unsafe"), C = verdict("Controversial", "PII");

function run(policy: Parameters<typeof resolvePolicy>[0], levels: Verdict[]) {
    const rule = new DecisionRule(resolvePolicy(policy));
    levels.forEach((v, i) => rule.push(v, i, i * 10));
    return rule.flag;
}

t.test("bad policies are refused with the field named", async (t) => {
    const table: Array<[unknown, string]> = [
        ["lenient", 'Expected "strict", "loose" or {window, minProb, controversial} for "policy" but received "lenient"'],
        [{window: 0}, 'Expected an integer between 1 and 64 for "policy.window" but received 0'],
        [{window: 2.5}, 'Expected an integer between 1 and 64 for "policy.window" but received 2.5'],
        [{minProb: 0}, 'Expected a number in (0, 1] for "policy.minProb" but received 0'],
        [{minProb: "0.5"}, 'Expected a number in (0, 1] for "policy.minProb" but received "0.5"'],
        [{controversial: 1}, 'Expected a boolean for "policy.controversial" but received 1']
    ];
    for (const [policy, message] of table)
        t.throws(() => resolvePolicy(policy as never), {name: "TypeError", message}, JSON.stringify(policy));
});

t.test("one unsafe token alone does not flag; two in a row do", async (t) => {
    t.equal(run("strict", [S, U, S, U, S]), null);
    t.same(run("strict", [S, U, U, S]), {index: 2, level: "Unsafe", category: "Violent", textOffset: 10, startIndex: 1});
});

t.test("strict counts Controversial, loose does not", async (t) => {
    t.same(run("strict", [S, C, C]), {index: 2, level: "Controversial", category: "PII", textOffset: 10, startIndex: 1});
    t.equal(run("loose", [S, C, C, U, C]), null);
    t.same(run("loose", [C, U, U]), {index: 2, level: "Unsafe", category: "Violent", textOffset: 10, startIndex: 1});
    t.same(run("strict", [C, U]), {index: 1, level: "Unsafe", category: "Violent", textOffset: 0, startIndex: 0}, "mixed pair under strict");
});

t.test("custom window and probability threshold", async (t) => {
    t.equal(run({window: 3}, [U, U, S, U, U]), null);
    t.same(run({window: 3}, [U, U, U])?.index, 2);
    t.equal(run({minProb: 0.95}, [U, U, U]), null, "0.8 + 0.1 is below the threshold");
    t.same(run({minProb: 0.85}, [C, C])?.index, 1, "P(Unsafe)+P(Controversial) = 0.9 counts when controversial counts");
    t.equal(run({minProb: 0.85, controversial: false}, [C, C]), null);
});

t.test("the flag stays after it fired", async (t) => {
    t.same(run("strict", [U, U, S, S, U, U])?.index, 1);
});

t.test("the response level follows the official order: Unsafe pairs before Controversial pairs", async (t) => {
    t.same(responseLevel([C, C, S, U, U]), {level: "Unsafe", category: "Violent"});
    t.same(responseLevel([C, C, S, U]), {level: "Controversial", category: "PII"});
    t.same(responseLevel([U, S, U]), {level: "Safe", category: null});
    t.same(responseLevel([]), {level: "Safe", category: null});
});
