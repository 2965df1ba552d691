// Inputs of known token lengths: ordinary English prose (speed does not depend on which tokens are fed, but a real
// text keeps token counts and tokenizer work realistic).

/** An assistant-style paragraph; repeated as needed. */
const PROSE = "Sure, here is an overview of how a small bakery can plan its week. Start on Monday by checking the stock of " +
    "flour, sugar, butter and yeast, and order what will run out before Friday. Bake the breads that keep well early " +
    "in the week, and leave the pastries for the days with the most customers. Keep a simple notebook of what sold " +
    "each day, because after a month the pattern becomes clear and waste goes down. Staff schedules should follow the " +
    "same pattern: two people in the early morning for the ovens, one more at noon for the counter. Finally, set aside " +
    "an hour on Sunday to clean the equipment, review the accounts and write the next week's plan. ";

/** A tokenizer: text in, token ids out (plain text, special tokens not parsed). */
export type TextTokenizer = (text: string) => ArrayLike<number>;

/**
 * Text of exactly `tokens` tokens, or the shortest cut of prose at or over it (a token boundary may fall inside a
 * word): the prose repeated, cut at a word, with `tag` first so that texts with different tags differ from their
 * first token on.
 * @param tokens - the wanted length
 * @param tokenize - the model's tokenizer
 * @param tag - a prefix (e.g. a request number)
 */
export function proseOfTokens(tokens: number, tokenize: TextTokenizer, tag = ""): string {
    const words = (tag + PROSE.repeat(Math.ceil((tokens + 1) / 100) + 1)).split(" ");
    // binary search for the fewest words that reach `tokens` tokens
    let low = 1;
    let high = words.length;
    while (low < high) {
        const middle = (low + high) >> 1;
        if (tokenize(words.slice(0, middle).join(" ")).length >= tokens)
            high = middle;
        else
            low = middle + 1;
    }
    return words.slice(0, low).join(" ");
}

/**
 * Exactly `count` token ids of prose (response tokens for the Stream session and the baselines).
 * @param count - how many
 * @param tokenize - the model's tokenizer
 */
export function proseTokens(count: number, tokenize: TextTokenizer): number[] {
    const ids = Array.from(tokenize(PROSE.repeat(Math.ceil(count / 100) + 1)));
    return ids.slice(0, count);
}

/**
 * Prose of at least `tokens` tokens, without a tokenizer at hand (the paragraph is over 100 tokens).
 * @param tokens - the least length wanted
 */
export function proseAtLeast(tokens: number): string {
    return PROSE.repeat(Math.ceil(tokens / 100)).trimEnd();
}
