// Gen policies: strict, loose, thresholds.

import t from "tap";
import {isFlagged, resolveGenPolicy} from "../../src/gen/genPolicy.js";
import type {GenPolicyOption} from "../../src/gen/genPolicy.js";

t.test("bad policies are refused with the field named", async (t) => {
    const table: Array<[unknown, string]> = [
        ["medium", 'Expected "strict", "loose" or {minProb, controversial} for "policy" but received "medium"'],
        [null, 'Expected "strict", "loose" or {minProb, controversial} for "policy" but received null'],
        [{}, 'Expected a number in (0, 1] for "policy.minProb" but received undefined'],
        [{minProb: 0}, 'Expected a number in (0, 1] for "policy.minProb" but received 0'],
        [{minProb: 1.5}, 'Expected a number in (0, 1] for "policy.minProb" but received 1.5'],
        [{minProb: 0.5, controversial: "yes"}, 'Expected a boolean for "policy.controversial" but received "yes"']
    ];
    for (const [policy, message] of table)
        t.throws(() => resolveGenPolicy(policy as GenPolicyOption), new TypeError(message), JSON.stringify(policy));
});

t.test("strict flags Controversial, loose does not, thresholds read the probabilities", async (t) => {
    const probs = {Safe: 0.5, Unsafe: 0.2, Controversial: 0.3};
    t.same(resolveGenPolicy(undefined), {minProb: null, controversial: true});
    t.equal(isFlagged("Controversial", probs, resolveGenPolicy("strict")), true);
    t.equal(isFlagged("Controversial", probs, resolveGenPolicy("loose")), false);
    t.equal(isFlagged("Unsafe", probs, resolveGenPolicy("loose")), true);
    t.equal(isFlagged("Safe", probs, resolveGenPolicy("strict")), false);
    t.equal(isFlagged("Safe", probs, resolveGenPolicy({minProb: 0.5})), true, "0.2 + 0.3 reaches 0.5");
    t.equal(isFlagged("Safe", probs, resolveGenPolicy({minProb: 0.5, controversial: false})), false, "0.2 alone does not");
    t.equal(isFlagged("Safe", probs, resolveGenPolicy({minProb: 0.2, controversial: false})), true);
});
