import type {RiskLevel, Verdict} from "./types.js";

/** The labels of one head path (query or response), in head order. */
export interface HeadLabels {
    risk: readonly RiskLevel[],
    category: readonly string[]
}

const riskLevels: ReadonlySet<string> = new Set<RiskLevel>(["Safe", "Unsafe", "Controversial"]);

/**
 * Checks that a head's risk labels are exactly Safe, Unsafe and Controversial (in any order: the order is the
 * head's own) and that it has categories.
 * @throws naming the head file's labels when they are not
 */
export function checkHeadLabels(risk: readonly string[], category: readonly string[], what: string): HeadLabels {
    if (risk.length !== 3 || new Set(risk).size !== 3 || !risk.every((label) => riskLevels.has(label)))
        throw new Error(`Expected the ${what} risk labels to be Safe, Unsafe and Controversial but the head file has ${JSON.stringify(risk)}`);
    if (category.length === 0)
        throw new Error(`Expected the ${what} category labels to be listed but the head file has none`);
    return {risk: risk as RiskLevel[], category};
}

/**
 * Turns a row-major block of head probabilities (per row: risk probabilities then category probabilities,
 * in head order) into verdicts.
 */
export function headVerdicts(probs: Float32Array, labels: HeadLabels): Verdict[] {
    const width = labels.risk.length + labels.category.length;
    const verdicts: Verdict[] = [];
    for (let row = 0; row * width < probs.length; row++) {
        const base = row * width;
        const riskProbs = {} as Record<RiskLevel, number>;
        let level = labels.risk[0];
        labels.risk.forEach((label, i) => {
            riskProbs[label] = probs[base + i];
            if (probs[base + i] > riskProbs[level])
                level = label;
        });
        const categoryProbs: Record<string, number> = {};
        let category = labels.category[0];
        labels.category.forEach((label, i) => {
            const p = probs[base + labels.risk.length + i];
            categoryProbs[label] = p;
            if (p > categoryProbs[category])
                category = label;
        });
        verdicts.push({level, category: level === "Safe" ? null : category, probs: riskProbs, categoryProbs});
    }
    return verdicts;
}
