import type {Agreement, EvalReport, ModelEvaluation} from "./evaluateFile.js";
import {TIMELINESS_BINS, ratioOrNull} from "./EvalTally.js";
import type {BinaryMetrics, CategoryMetrics, Miss, SweepMetrics, TargetMetrics, TimelinessMetrics} from "./EvalTally.js";

/** Text made safe for HTML element content and attribute values: the records are hostile text by nature. */
export function escapeHtml(text: string): string {
    return text.replace(/[&<>"']/g, (char) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"})[char]!);
}

const colors = {precision: "#2563eb", recall: "#ea580c", f1: "#16a34a", grid: "#e5e7eb", axis: "#6b7280", bar: "#7c3aed"};

/**
 * The evaluation as one self-contained HTML page: no script, no network (a Content-Security-Policy forbids both),
 * charts as inline SVG. Every text from the records or the models is escaped.
 */
export function evalReportHtml(report: EvalReport): string {
    const targets = (["prompt", "response"] as const).filter((target) => report.models.some((model) => model.targets[target] != null));
    const title = `qwenguard eval: ${report.models.map((model) => model.name).join(" vs ")}`;
    return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;background:#f8fafc;color:#111827}
header{background:#111827;color:#f9fafb;padding:18px 28px}header h1{margin:0 0 4px;font-size:20px}header p{margin:2px 0;color:#d1d5db}
main{padding:8px 28px 40px;max-width:1400px}h2{margin:28px 0 10px;font-size:18px}h3{margin:0 0 8px;font-size:15px}
.grid{display:flex;flex-wrap:wrap;gap:16px}.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px 16px;flex:1 1 560px;min-width:0}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}table{border-collapse:collapse;margin:6px 0}
td,th{border-bottom:1px solid #e5e7eb;padding:3px 8px;text-align:right;vertical-align:top}th{background:#f3f4f6;font-weight:600}
td.l,th.l{text-align:left}.muted{color:#6b7280}.text{max-width:520px;text-align:left;white-space:pre-wrap;word-break:break-word;font-size:12.5px}
.pill{display:inline-block;border-radius:9px;padding:0 7px;font-size:12px;font-weight:600}.Safe{background:#dcfce7;color:#166534}
.Unsafe{background:#fee2e2;color:#991b1b}.Controversial{background:#fef3c7;color:#92400e}.legend span{margin-right:12px}
</style>
</head>
<body>
<header><h1>${escapeHtml(title)}</h1>
<p>${escapeHtml(report.input)} · target ${escapeHtml(report.target)} · policy ${escapeHtml(policyText(report.policy))} · ${escapeHtml(report.created)} · qwenguard ${escapeHtml(report.version)}</p>
<p>${report.models.map((model) => `${escapeHtml(model.name)} (${model.kind}): ${model.records - model.errors} judged, ${model.errors} error${model.errors === 1 ? "" : "s"}` +
        (model.processed > 0 ? `, ${model.recordsPerSecond.toFixed(2)} records/s` : "")).join(" · ")}${report.complete ? "" : " · <strong>incomplete run: rerun the same command to resume</strong>"}</p>
</header>
<main>
${targets.map((target) => `<h2>${target === "prompt" ? "Prompts" : "Responses"}</h2>
<div class="grid">${report.models.filter((model) => model.targets[target] != null)
        .map((model) => modelCard(model, model.targets[target]!, report)).join("\n")}</div>
${report.agreement?.[target] != null ? agreementCard(report, report.agreement[target]) : ""}`).join("\n")}
${errorsCard(report)}
</main>
</body>
</html>
`;
}

function modelCard(model: ModelEvaluation, metrics: TargetMetrics, report: EvalReport): string {
    return `<section class="card"><h3>${escapeHtml(model.name)} <span class="muted">(${model.kind}, ${metrics.records} records)</span></h3>
<div class="row">${metricsTable(metrics, report)}${confusionSvg(metrics)}</div>
<div class="row">${sweepSvg(metrics.sweep, report)}${metrics.categories != null ? categorySvg(metrics.categories) : ""}</div>
${metrics.categories != null ? `<h3>Categories: labelled against predicted</h3>${categoryConfusionSvg(metrics.categories)}` : ""}
${metrics.timeliness != null ? timelinessSvg(metrics.timeliness) : ""}
${metrics.refusal != null ? `<h3>Refusal</h3>${binaryTable([["refusal", metrics.refusal]])}` : ""}
${missesTable(metrics.misses.falseNegatives, "Missed (labelled unsafe, not flagged; least suspicious first)")}
${missesTable(metrics.misses.falsePositives, "False alarms (labelled safe, flagged; most suspicious first)")}
</section>`;
}

function metricsTable(metrics: TargetMetrics, report: EvalReport): string {
    const best = metrics.sweep.best;
    return `<div>${binaryTable([["strict", metrics.strict], ["loose", metrics.loose], [`policy ${policyText(report.policy)}`, metrics.policy]])}
<p class="muted">Strict: Controversial counts as unsafe (labels and verdicts); loose: as safe.${best != null
        ? `<br>Best F1 ${fixed(best.f1)} at threshold ${best.threshold} (<code>--policy ${best.threshold}</code>).` : ""}</p></div>`;
}

function binaryTable(rows: Array<[string, BinaryMetrics]>): string {
    return `<table><tr><th class="l">mode</th><th>precision</th><th>recall</th><th>F1</th><th>accuracy</th><th>TP</th><th>FP</th><th>FN</th><th>TN</th></tr>
${rows.map(([name, m]) => `<tr><td class="l">${escapeHtml(name)}</td><td>${fixed(m.precision)}</td><td>${fixed(m.recall)}</td><td><b>${fixed(m.f1)}</b></td>` +
        `<td>${fixed(m.accuracy)}</td><td>${m.tp}</td><td>${m.fp}</td><td>${m.fn}</td><td>${m.tn}</td></tr>`).join("\n")}</table>`;
}

/** A heat map: each cell's shade is its share of the row (the labelled level). */
function confusionSvg(metrics: TargetMetrics): string {
    const {labels, predicted, counts} = metrics.confusion;
    return heatMap(labels, predicted, counts, "label", "verdict", 84);
}

/** The category heat map: labelled categories (rows) by predicted ones, "(Safe)" where the verdict was Safe. */
function categoryConfusionSvg({labels, predicted, counts}: CategoryMetrics): string {
    return heatMap(labels, predicted, counts, "labelled category", "predicted category", predicted.length > 8 ? 48 : 64);
}

function heatMap(rows: readonly string[], columns: readonly string[], counts: number[][], rowTitle: string, columnTitle: string, cell: number): string {
    const left = Math.max(...rows.map((row) => row.length)) * 7 + 24;
    const top = 46;
    const title = `rows: ${rowTitle} · columns: ${columnTitle}`;
    // wide enough for its title too (a few columns under a long one)
    const width = Math.max(left + columns.length * cell + 8, left + title.length * 6);
    const height = top + rows.length * cell + 8;
    const cells = rows.map((row, r) => {
        const total = counts[r].reduce((a, b) => a + b, 0);
        return columns.map((column, c) => {
            const share = total > 0 ? counts[r][c] / total : 0;
            const fill = `rgba(37,99,235,${(0.06 + 0.84 * share).toFixed(3)})`;
            const x = left + c * cell;
            const y = top + r * cell;
            return `<rect x="${x}" y="${y}" width="${cell - 2}" height="${cell - 2}" fill="${fill}"><title>${escapeHtml(`${row} → ${column}: ${counts[r][c]}`)}</title></rect>` +
                `<text x="${x + cell / 2 - 1}" y="${y + cell / 2 + 4}" text-anchor="middle" font-size="13" fill="${share > 0.55 ? "#fff" : "#111827"}">${counts[r][c]}</text>`;
        }).join("");
    }).join("\n");
    const columnLabels = columns.map((column, c) => `<text x="${left + c * cell + cell / 2}" y="${top - 8}" text-anchor="middle" font-size="10.5" fill="${colors.axis}">` +
        `${escapeHtml(shorten(column, Math.floor(cell / 6)))}<title>${escapeHtml(column)}</title></text>`).join("");
    const rowLabels = rows.map((row, r) => `<text x="${left - 6}" y="${top + r * cell + cell / 2 + 4}" text-anchor="end" font-size="11" fill="${colors.axis}">${escapeHtml(row)}</text>`).join("");
    return `<svg role="img" aria-label="${escapeHtml(`${rowTitle} by ${columnTitle}`)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">
<text x="${left}" y="14" font-size="11" fill="${colors.axis}">${escapeHtml(title)}</text>${columnLabels}${rowLabels}${cells}</svg>`;
}

/** Precision, recall and F1 against the threshold, with the best-F1 threshold, the targets and a threshold policy marked. */
function sweepSvg(sweep: SweepMetrics, report: EvalReport): string {
    const width = 420;
    const height = 250;
    const pad = {left: 38, right: 12, top: 26, bottom: 34};
    const x = (t: number) => pad.left + t * (width - pad.left - pad.right);
    const y = (v: number) => height - pad.bottom - v * (height - pad.top - pad.bottom);
    const line = (key: "precision" | "recall" | "f1") => {
        const points = sweep.points.filter((point) => point[key] != null).map((point) => `${x(point.threshold).toFixed(1)},${y(point[key]!).toFixed(1)}`);
        return points.length > 0 ? `<polyline fill="none" stroke="${colors[key]}" stroke-width="2" points="${points.join(" ")}"/>` : "";
    };
    const grid = [0, 0.25, 0.5, 0.75, 1].map((v) => `<line x1="${x(0)}" x2="${x(1)}" y1="${y(v)}" y2="${y(v)}" stroke="${colors.grid}"/>` +
        `<text x="${pad.left - 5}" y="${y(v) + 4}" text-anchor="end" font-size="10" fill="${colors.axis}">${v}</text>` +
        `<text x="${x(v)}" y="${height - pad.bottom + 14}" text-anchor="middle" font-size="10" fill="${colors.axis}">${v}</text>`).join("");
    const markers: Array<[number, string, string]> = [];
    if (sweep.best != null)
        markers.push([sweep.best.threshold, `best F1 ${fixed(sweep.best.f1)}`, "#111827"]);
    if (typeof report.policy === "object")
        markers.push([report.policy.minProb, "policy", "#dc2626"]);
    for (const target of [sweep.targetPrecision, sweep.targetRecall])
        if (target?.point != null)
            markers.push([target.point.threshold, target === sweep.targetPrecision ? `precision ≥ ${target.target}` : `recall ≥ ${target.target}`, "#9333ea"]);
    const marks = markers.map(([t, label, color], i) => `<line x1="${x(t)}" x2="${x(t)}" y1="${y(0)}" y2="${y(1)}" stroke="${color}" stroke-dasharray="4 3"/>` +
        `<text x="${Math.min(x(t) + 4, width - 110)}" y="${pad.top - 12 + 11 * i}" font-size="10" fill="${color}">${escapeHtml(`${label} @ ${t}`)}</text>`).join("");
    return `<svg role="img" aria-label="precision, recall and F1 against the threshold" width="${width}" height="${height + 14}" viewBox="0 0 ${width} ${height + 14}">
${grid}${line("precision")}${line("recall")}${line("f1")}${marks}
<text x="${x(0.5)}" y="${height - 4}" text-anchor="middle" font-size="10.5" fill="${colors.axis}">threshold on P(Unsafe) + P(Controversial)</text>
<g font-size="11"><rect x="${pad.left}" y="${height + 2}" width="10" height="3" fill="${colors.precision}"/><text x="${pad.left + 14}" y="${height + 8}">precision</text>
<rect x="${pad.left + 80}" y="${height + 2}" width="10" height="3" fill="${colors.recall}"/><text x="${pad.left + 94}" y="${height + 8}">recall</text>
<rect x="${pad.left + 146}" y="${height + 2}" width="10" height="3" fill="${colors.f1}"/><text x="${pad.left + 160}" y="${height + 8}">F1</text></g></svg>`;
}

/** Precision and recall of each category, as paired horizontal bars. */
function categorySvg(categories: CategoryMetrics): string {
    const rows = categories.perCategory;
    const left = 190;
    const barWidth = 200;
    const rowHeight = 26;
    const height = 26 + rows.length * rowHeight;
    const bars = rows.map((row, i) => {
        const y0 = 22 + i * rowHeight;
        const bar = (value: number | null, dy: number, color: string) => value == null ? ""
            : `<rect x="${left}" y="${y0 + dy}" width="${(value * barWidth).toFixed(1)}" height="9" fill="${color}"/>` +
            `<text x="${left + value * barWidth + 4}" y="${y0 + dy + 8}" font-size="9.5" fill="${colors.axis}">${fixed(value)}</text>`;
        return `<text x="${left - 6}" y="${y0 + 13}" text-anchor="end" font-size="11">${escapeHtml(shorten(row.category, 28))} <tspan fill="${colors.axis}">(${row.support})</tspan>` +
            `<title>${escapeHtml(row.category)}</title></text>${bar(row.precision, 1, colors.precision)}${bar(row.recall, 11, colors.recall)}`;
    }).join("\n");
    return `<svg role="img" aria-label="per-category precision and recall" width="${left + barWidth + 50}" height="${height}" viewBox="0 0 ${left + barWidth + 50} ${height}">
<text x="0" y="12" font-size="11" fill="${colors.axis}">categories (labelled-unsafe records; support): <tspan fill="${colors.precision}">precision</tspan> · <tspan fill="${colors.recall}">recall</tspan></text>
${bars}</svg>`;
}

/** The official timeliness bins as a histogram. */
function timelinessSvg(timeliness: TimelinessMetrics): string {
    const width = 560;
    const height = 190;
    const pad = {left: 34, bottom: 30, top: 14};
    const most = Math.max(1, ...TIMELINESS_BINS.map((bin) => timeliness.bins[bin]));
    const step = (width - pad.left - 10) / TIMELINESS_BINS.length;
    const bars = TIMELINESS_BINS.map((bin, i) => {
        const value = timeliness.bins[bin];
        const h = value / most * (height - pad.top - pad.bottom);
        const x = pad.left + i * step;
        const color = bin === "hit" ? "#16a34a" : bin === "ahead" ? "#0891b2" : bin === "never" ? "#dc2626" : colors.bar;
        return `<rect x="${x + 4}" y="${height - pad.bottom - h}" width="${step - 8}" height="${h}" fill="${color}"/>` +
            `<text x="${x + step / 2}" y="${height - pad.bottom - h - 4}" text-anchor="middle" font-size="11">${value}</text>` +
            `<text x="${x + step / 2}" y="${height - pad.bottom + 14}" text-anchor="middle" font-size="10.5" fill="${colors.axis}">${escapeHtml(bin)}</text>`;
    }).join("");
    return `<h3>Stream timeliness <span class="muted">(${timeliness.records} unsafe responses with a span: exact hit ${percent(timeliness.exactHitRate)}, ` +
        `stopped within 128 tokens ${percent(timeliness.stopRateWithin128)}${timeliness.lateMedian != null ? `, median ${timeliness.lateMedian} tokens late when late` : ""}` +
        `${timeliness.withoutSpan > 0 ? `; ${timeliness.withoutSpan} without a span` : ""}${timeliness.badSpans > 0 ? `; ${timeliness.badSpans} spans past the text` : ""})</span></h3>
<svg role="img" aria-label="where the stream rule fired relative to the unsafe span" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">
<line x1="${pad.left}" x2="${width - 6}" y1="${height - pad.bottom}" y2="${height - pad.bottom}" stroke="${colors.axis}"/>${bars}
<text x="${pad.left + step * 4}" y="${height - 2}" text-anchor="middle" font-size="10" fill="${colors.axis}">tokens after the span's end when the rule fired (ahead: before it began; never: not flagged)</text></svg>`;
}

function missesTable(misses: readonly Miss[], title: string): string {
    if (misses.length === 0)
        return "";
    return `<h3>${escapeHtml(title)}</h3><table><tr><th>line</th><th class="l">id</th><th class="l">label</th><th class="l">verdict</th><th>score</th><th class="l">text</th></tr>
${misses.map((miss) => `<tr><td>${miss.line}</td><td class="l">${escapeHtml(String(miss.id ?? ""))}</td><td class="l">${pill(miss.label)}</td>` +
        `<td class="l">${pill(miss.level)}</td><td>${miss.score.toFixed(4)}</td><td class="text">${recordText(miss.text)}</td></tr>`).join("\n")}</table>`;
}

function agreementCard(report: EvalReport, agreement: Agreement): string {
    const [first, second] = report.models;
    return `<section class="card"><h3>${escapeHtml(first.name)} vs ${escapeHtml(second.name)}</h3>
<p>${agreement.records} records: same level ${percent(ratioOrNull(agreement.sameLevel, agreement.records))}, same strict decision ` +
        `${percent(ratioOrNull(agreement.sameDecision, agreement.records))} (Cohen's κ ${fixed(agreement.kappa)}), ${agreement.disagreements} disagreements` +
        `${report.disagreementsFile != null ? ` (a sample of ${agreement.sample.length} in ${escapeHtml(report.disagreementsFile)})` : ""}.</p>
${agreement.sample.length > 0 ? `<table><tr><th>line</th><th class="l">label</th><th class="l">${escapeHtml(first.name)}</th><th class="l">${escapeHtml(second.name)}</th><th class="l">text</th></tr>
${agreement.sample.slice(0, 25).map((record) => `<tr><td>${record.line}</td><td class="l">${pill(record.label)}</td>` +
        record.verdicts.map((verdict) => `<td class="l">${pill(verdict.level)} ${verdict.score.toFixed(3)}</td>`).join("") +
        `<td class="text">${recordText(record.text)}</td></tr>`).join("\n")}</table>` : ""}</section>`;
}

function errorsCard(report: EvalReport): string {
    if (report.errors.count === 0)
        return "";
    return `<h2>Bad records (${report.errors.count})</h2><section class="card"><p class="muted">Records ${report.models.length > 1
        ? "some model could not judge, left out of every model's figures" : "the model could not judge, left out of its figures"}.</p><table><tr><th>line</th><th class="l">error</th></tr>
${report.errors.first.map((error) => `<tr><td>${error.line}</td><td class="l text">${escapeHtml(error.error)}</td></tr>`).join("\n")}</table>
${report.errors.count > report.errors.first.length ? `<p class="muted">… and ${report.errors.count - report.errors.first.length} more (see the errors files beside the predictions).</p>` : ""}</section>`;
}

function recordText(text: {prompt: string, response?: string} | undefined): string {
    if (text == null)
        return "";
    return `<b>user:</b> ${escapeHtml(text.prompt)}${text.response != null ? `<br><b>assistant:</b> ${escapeHtml(text.response)}` : ""}`;
}

function pill(level: string): string {
    return `<span class="pill ${escapeHtml(level)}">${escapeHtml(level)}</span>`;
}

function fixed(value: number | null | undefined): string {
    return value == null ? "–" : value.toFixed(3);
}

function percent(value: number | null): string {
    return value == null ? "–" : `${(100 * value).toFixed(1)}%`;
}

function shorten(text: string, max: number): string {
    return text.length > max ? `${text.slice(0, Math.max(1, max - 1))}…` : text;
}

export function policyText(policy: EvalReport["policy"]): string {
    return typeof policy === "string" ? policy : `${policy.minProb}${policy.controversial === false ? " (Unsafe only)" : ""}`;
}
