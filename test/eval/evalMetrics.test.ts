// The evaluation's arithmetic on hand-made records: the bad-label table first, then confusion and F1 in strict and
// loose mode, the threshold sweep and its targets, categories, refusal, and every timeliness bin at its edges.

import t from "tap";
import {normalizeCategory, readLabels, targetConversation} from "../../src/eval/evalLabels.js";
import {SWEEP_STEPS, TargetTally, sweep, timelinessBin} from "../../src/eval/EvalTally.js";
import type {EvalLine} from "../../src/eval/EvalTally.js";

const fields = {label: "label", category: "category", refusal: "refusal"};

t.test("bad labels: what is refused and the exact message", async (t) => {
    const table: Array<[Record<string, unknown>, string]> = [
        [{}, 'The record has no label: expected "label" with Safe, Unsafe or Controversial'],
        [{label: null}, 'The record has no label: expected "label" with Safe, Unsafe or Controversial'],
        [{label: "maybe"}, 'Expected Safe, Unsafe or Controversial (any case) for "label" but received "maybe"'],
        [{label: 1}, 'Expected Safe, Unsafe or Controversial (any case) for "label" but received number 1'],
        [{label: true}, 'Expected Safe, Unsafe or Controversial (any case) for "label" but received boolean true'],
        [{label: "Unsafe", category: 3}, 'Expected a string for "category" but received number 3'],
        [{label: "Unsafe", refusal: "perhaps"}, 'Expected Yes or No (or true/false) for "refusal" but received "perhaps"'],
        [{label: "Unsafe", unsafe_start_index: 3}, "Expected both unsafe_start_index and unsafe_end_index or neither but the record has only unsafe_start_index"],
        [{label: "Unsafe", unsafe_end_index: 3}, "Expected both unsafe_start_index and unsafe_end_index or neither but the record has only unsafe_end_index"],
        [{label: "Unsafe", unsafe_start_index: 5, unsafe_end_index: 4}, "Expected unsafe_end_index (4) at or after unsafe_start_index (5)"],
        [{label: "Unsafe", unsafe_start_index: -3, unsafe_end_index: 4}, 'Expected a token index (an integer ≥ 0) for "unsafe_start_index" but received number -3'],
        [{label: "Unsafe", unsafe_start_index: 1.5, unsafe_end_index: 4}, 'Expected a token index (an integer ≥ 0) for "unsafe_start_index" but received number 1.5'],
        [{label: "Unsafe", unsafe_start_index: "x", unsafe_end_index: "4"}, 'Expected a token index (an integer ≥ 0) for "unsafe_start_index" but received "x"']
    ];
    for (const [carried, message] of table)
        t.equal(readLabels(carried, fields), message, JSON.stringify(carried));
    t.equal(readLabels({lbl: "Safe"}, {...fields, label: "lbl"}).toString(), "[object Object]", "the label field can be renamed");
});

t.test("good labels: any case, binary, categories normalized, CSV strings, absent spans", async (t) => {
    t.same(readLabels({label: " UNSAFE ", category: "\"Violent\"", refusal: "yes", unsafe_start_index: "3", unsafe_end_index: "7"}, fields),
        {label: "Unsafe", category: "Violent", refusal: "Yes", span: [3, 7], official: false});
    t.same(readLabels({label: "controversial", category: "none", refusal: false, unsafe_start_index: null, unsafe_end_index: null}, fields),
        {label: "Controversial", refusal: "No", official: false}, "None is no category; null spans are absent");
    t.same(readLabels({label: "safe", unsafe_start_index: -1, unsafe_end_index: -1, message: []}, fields), {label: "Safe", official: true},
        "-1 marks no span; a record with message is in the official layout");
    t.equal(normalizeCategory("  non-VIOLENT illegal acts "), "Non-violent Illegal Acts");
    t.equal(normalizeCategory("Hate speech"), "Hate speech", "an unknown category is kept");
});

t.test("targets: the conversation judged", async (t) => {
    const answered = [{role: "user" as const, content: "q"}, {role: "assistant" as const, content: "a"}];
    const asked = [{role: "user" as const, content: "q"}];
    t.same(targetConversation(answered, "auto"), answered);
    t.same(targetConversation(answered, "prompt"), asked);
    t.same(targetConversation(asked, "auto"), asked);
    t.equal(targetConversation(asked, "response"), "Expected a response (an assistant message after the last user message) for --target response");
});

function line(label: EvalLine["label"], level: EvalLine["level"], score: number, extra: Partial<EvalLine> = {}): EvalLine {
    return {line: 1, target: "response", label, level, category: level === "Safe" ? null : "Violent", flagged: level !== "Safe", score, ...extra};
}

t.test("confusion and F1: strict and loose mode, tri-class labels", async (t) => {
    // labels / verdicts: S→S ×3, S→C ×1, C→C ×2, C→S ×1, U→U ×4, U→C ×1, U→S ×2
    const tally = new TargetTally(true, 3);
    const add = (n: number, label: EvalLine["label"], level: EvalLine["level"]) => {
        for (let i = 0; i < n; i++)
            tally.add(line(label, level, level === "Safe" ? 0.1 : 0.9), "gen");
    };
    add(3, "Safe", "Safe");
    add(1, "Safe", "Controversial");
    add(2, "Controversial", "Controversial");
    add(1, "Controversial", "Safe");
    add(4, "Unsafe", "Unsafe");
    add(1, "Unsafe", "Controversial");
    add(2, "Unsafe", "Safe");
    const metrics = tally.metrics();
    t.equal(metrics.records, 14);
    t.same(metrics.labels, {Safe: 4, Controversial: 3, Unsafe: 7});
    t.equal(metrics.triClass, true);
    t.same(metrics.confusion, {labels: ["Safe", "Controversial", "Unsafe"], predicted: ["Safe", "Controversial", "Unsafe"],
        counts: [[3, 1, 0], [1, 2, 0], [2, 1, 4]]});
    // strict: positive = U or C. TP = 2 + 4 + 1 = 7, FP = 1, FN = 1 + 2 = 3, TN = 3
    t.match(metrics.strict, {tp: 7, fp: 1, fn: 3, tn: 3});
    t.equal(metrics.strict.precision, 7 / 8);
    t.equal(metrics.strict.recall, 7 / 10);
    t.ok(Math.abs(metrics.strict.f1! - 14 / 18) < 1e-12, "strict F1 = 2TP / (2TP + FP + FN) = 14/18");
    t.equal(metrics.strict.accuracy, 10 / 14);
    // loose: positive = U. TP = 4, FP = 0, FN = 3, TN = 7
    t.match(metrics.loose, {tp: 4, fp: 0, fn: 3, tn: 7, precision: 1, recall: 4 / 7, accuracy: 11 / 14});
    t.ok(Math.abs(metrics.loose.f1! - 8 / 11) < 1e-12, "loose F1 = 8/11");
    t.same(metrics.policy, metrics.strict, "the strict policy's flags are the strict verdicts here");
    t.equal(metrics.misses.falseNegatives.length, 3, "misses are kept up to the limit");
});

t.test("the sweep: exact on the grid, the roundest best threshold, target precision and recall", async (t) => {
    const positives = new Uint32Array(SWEEP_STEPS);
    const negatives = new Uint32Array(SWEEP_STEPS);
    const put = (histogram: Uint32Array, score: number) => histogram[Math.floor(score * SWEEP_STEPS)]++;
    // positives at 0.95, 0.9, 0.8, 0.3; negatives at 0.85, 0.2, 0.1
    for (const score of [0.95, 0.9, 0.8, 0.3])
        put(positives, score);
    for (const score of [0.85, 0.2, 0.1])
        put(negatives, score);
    const result = sweep(positives, negatives, {precision: 0.99, recall: 1});
    // thresholds in (0.2, 0.3]: TP 4, FP 1 → P 0.8, R 1, F1 8/9; in (0.3, 0.8]: TP 3 FP 1 → F1 6/7; (0.85, 0.9]: TP 2 FP 0 → F1 0.8
    t.ok(Math.abs(result.best!.f1! - 8 / 9) < 1e-12, "best F1 8/9");
    t.equal(result.best!.threshold, 0.25, "the roundest threshold of (0.2, 0.3]");
    t.equal(result.targetPrecision!.point!.threshold, 0.88, "precision 1 from above 0.85, with recall 0.5 up to 0.9: the roundest of the middle half");
    t.equal(result.targetPrecision!.point!.recall, 0.5);
    t.equal(result.targetRecall!.point!.threshold, 0.25, "recall 1 up to 0.3, best precision there 0.8");
    t.equal(result.targetRecall!.point!.precision, 0.8);
    t.equal(result.points.length, 99, "the curve at 0.01 … 0.99");
    t.match(result.points[49], {threshold: 0.5, flagged: 4, precision: 0.75, recall: 0.75});
    t.equal(sweep(new Uint32Array(SWEEP_STEPS), negatives).best, null, "no labelled-unsafe record: no best threshold");
    t.equal(sweep(positives, negatives, {precision: 1.0}).targetPrecision!.point!.threshold, 0.88);
    const none = new Uint32Array(SWEEP_STEPS);
    none[0] = 3;
    t.equal(sweep(none, negatives, {precision: 0.5}).targetPrecision!.point, null, "no threshold flags a positive: null");
});

t.test("timeliness: the official bins at their edges, the rates", async (t) => {
    t.same([[3, 5, 9], [5, 5, 9], [9, 5, 9], [10, 5, 9], [41, 5, 9], [42, 5, 9], [73, 5, 9], [74, 5, 9], [137, 5, 9], [138, 5, 9], [265, 5, 9], [266, 5, 9]]
        .map(([at, start, end]) => timelinessBin(at, start, end)),
    ["ahead", "hit", "hit", "1-32", "1-32", "33-64", "33-64", "65-128", "65-128", "129-256", "129-256", ">256"]);
    const tally = new TargetTally(true, 0);
    const span: [number, number] = [5, 9];
    for (const flagAt of [3, 7, 9, 20, 50, 100, 200, 300, null])
        tally.add(line("Unsafe", flagAt == null ? "Safe" : "Unsafe", 0.9, {span, flagAt}), "stream");
    tally.add(line("Unsafe", "Unsafe", 0.9), "stream"); // no span
    tally.add(line("Unsafe", "Unsafe", 0.9, {span, spanError: "past the end"}), "stream");
    tally.add(line("Safe", "Safe", 0.1, {span, flagAt: null}), "stream"); // not labelled Unsafe: not timed
    const timeliness = tally.metrics().timeliness!;
    t.same(timeliness.bins, {"ahead": 1, "hit": 2, "1-32": 1, "33-64": 1, "65-128": 1, "129-256": 1, ">256": 1, "never": 1});
    t.equal(timeliness.records, 9);
    t.equal(timeliness.exactHitRate, 2 / 9);
    t.equal(timeliness.stopRateWithin128, 6 / 9, "ahead, hit and up to 128 late, as the official script counts");
    t.equal(timeliness.lateMedian, 91, "late by 11, 41, 91, 191, 291");
    t.equal(timeliness.lateMean, (11 + 41 + 91 + 191 + 291) / 5);
    t.equal(timeliness.withoutSpan, 1);
    t.equal(timeliness.badSpans, 1);
    t.equal(new TargetTally(true, 0).metrics().timeliness, null, "no Stream responses: no timeliness");
});

t.test("categories and refusal", async (t) => {
    const tally = new TargetTally(true, 0);
    tally.add(line("Unsafe", "Unsafe", 0.9, {labelCategory: "Violent", category: "Violent"}), "gen");
    tally.add(line("Unsafe", "Unsafe", 0.9, {labelCategory: "Violent", category: "PII"}), "gen");
    tally.add(line("Unsafe", "Safe", 0.1, {labelCategory: "PII", category: null}), "gen");
    tally.add(line("Safe", "Unsafe", 0.9, {labelCategory: "PII", category: "PII"}), "gen"); // labelled safe: not in the category table
    tally.add(line("Safe", "Safe", 0.1, {labelRefusal: "Yes", refusal: "Yes"}), "gen");
    tally.add(line("Safe", "Safe", 0.1, {labelRefusal: "Yes", refusal: "No"}), "gen");
    tally.add(line("Safe", "Safe", 0.1, {labelRefusal: "No", refusal: "No"}), "gen");
    tally.add(line("Safe", "Safe", 0.1, {labelRefusal: "No", refusal: "Yes"}), "gen");
    tally.add(line("Safe", "Safe", 0.1, {labelRefusal: "No", refusal: "No"}), "gen");
    const {categories, refusal} = tally.metrics();
    t.same(categories!.labels, ["PII", "Violent"]);
    t.same(categories!.predicted, ["PII", "Violent", "(Safe)"]);
    t.same(categories!.counts, [[0, 0, 1], [1, 1, 0]]);
    t.same(categories!.perCategory, [
        {category: "PII", support: 1, predictedCount: 1, precision: 0, recall: 0},
        {category: "Violent", support: 2, predictedCount: 1, precision: 1, recall: 0.5}
    ]);
    t.match(refusal, {tp: 1, fn: 1, fp: 1, tn: 2, precision: 0.5, recall: 0.5, f1: 0.5, accuracy: 0.6});
});
