/**
 * Unicode NFC, as the Qwen3 tokenizer applies it before anything else (its `normalizer` is NFC in tokenizer.json;
 * llama.cpp's tokenizer does not normalize, so qwenguard does it for the text it tokenizes). For a text that arrives
 * in pieces, positions in the normalized text are mapped back to the text as given.
 */

/**
 * Characters that can change how the character before them normalizes: combining marks (including the spacing
 * vowel signs of Indic scripts that compose with their consonant) and Hangul vowel and final jamo. A cluster is a
 * character followed by a run of these; NFC never combines across clusters, so it can be applied cluster by cluster.
 */
const clusterPattern = /[^\p{M}\u1160-\u11ff][\p{M}\u1160-\u11ff]*|[\p{M}\u1160-\u11ff]+/gsu;
const mayChange = /[^\x00-\u02ff]/;

/** Normalized text, with where each of its positions comes from in the text as given. */
export interface NormalizedText {
    text: string,
    /** For each position of `text` (and its end): the position in the text as given; inside a changed cluster, the cluster's start. */
    sourceOffsets: Int32Array | null,
    /** For each position of `text`: whether the text can be cut there (a cluster start, or any position of an unchanged cluster). */
    cuttable: Uint8Array | null
}

/** NFC of a whole text, for tokenizing it. */
export function nfc(text: string): string {
    return mayChange.test(text) ? text.normalize("NFC") : text;
}

/**
 * NFC of a text with a map back to the text as given (null maps when nothing changed, the common case).
 * @param text - a text; its last cluster may still grow (more marks) when more text follows: callers hold it back
 */
export function nfcWithOffsets(text: string): NormalizedText {
    if (!mayChange.test(text) || text.normalize("NFC") === text)
        return {text, sourceOffsets: null, cuttable: null};
    let normalized = "";
    const sources: number[] = [];
    const cuts: number[] = [];
    for (const match of text.matchAll(clusterPattern)) {
        const cluster = match[0];
        const composed = cluster.normalize("NFC");
        for (let i = 0; i < composed.length; i++) {
            const same = composed === cluster;
            sources.push(same ? match.index + i : match.index);
            cuts.push(same || i === 0 ? 1 : 0);
        }
        normalized += composed;
    }
    sources.push(text.length);
    cuts.push(1);
    return {text: normalized, sourceOffsets: Int32Array.from(sources), cuttable: Uint8Array.from(cuts)};
}
