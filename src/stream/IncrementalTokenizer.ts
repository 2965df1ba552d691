import {nfcWithOffsets} from "../conversation/nfc.js";
import {preTokenPattern} from "../conversation/plainText.js";
import type {TokenizeFunction} from "../conversation/TokenSegments.js";

/** A token committed from a text stream, with the UTF-16 offset in the whole text where its bytes start. */
export interface CommittedToken {
    id: number,
    offset: number
}

/**
 * How many trailing pre-tokens are held back: more text can extend the last piece (`'` → `'s`, `!` → `!abc`, a
 * space run → its last space joining the next word), which can also move the start of the one before it.
 */
const heldBackPieces = 2;

/**
 * Most characters held back. A pre-token can be any length (a run of letters, of punctuation, of spaces): past this,
 * the text is committed anyway, cut between two characters (never inside a surrogate pair or before a combining mark),
 * so that a hostile stream cannot make every push re-scan an ever-growing tail or hold unjudged text without end. Only
 * such a run (over 4,096 characters without a break) is then tokenized differently from the whole text.
 */
export const MAX_HELD_BACK_CHARS = 4096;

const utf8 = new TextEncoder();

/**
 * Turns text arriving in arbitrary chunks into the tokens of the whole text, committing each token as soon as
 * it can no longer change: for EVERY way of cutting a text into chunks, the committed ids equal the ids of the
 * whole text in NFC (as the Qwen3 tokenizer normalizes it). Only the unstable tail (the last two pre-tokens, and a
 * dangling high surrogate) is held back until more text or {@link finish} arrives. Token offsets are positions in
 * the text as given. Special-token parsing is off: `<|im_end|>` in the text is plain text.
 */
export class IncrementalTokenizer {
    private pending = "";
    private committed = 0;

    /**
     * @param tokenize the model's tokenizer
     * @param tokenByteLength the number of UTF-8 bytes of a token's text
     */
    constructor(private readonly tokenize: TokenizeFunction, private readonly tokenByteLength: (token: number) => number) {}

    /** Appends a chunk; returns the tokens that became stable. */
    push(chunk: string): CommittedToken[] {
        this.pending += chunk;
        let boundary = this.stableBoundary();
        if (this.pending.length - boundary > MAX_HELD_BACK_CHARS)
            boundary = Math.max(boundary, forcedCut(this.pending));
        return boundary > 0 ? this.commit(boundary) : [];
    }

    /** Ends the text: returns all tokens still held back. */
    finish(): CommittedToken[] {
        return this.pending.length > 0 ? this.commit(this.pending.length) : [];
    }

    /** UTF-16 length of the text committed as tokens so far (where the held-back text starts). */
    get committedLength(): number {
        return this.committed;
    }

    /** Characters received but not yet committed as tokens. */
    get heldBack(): string {
        return this.pending;
    }

    private stableBoundary(): number {
        let end = this.pending.length;
        const last = this.pending.charCodeAt(end - 1);
        if (last >= 0xd800 && last <= 0xdbff)
            end--; // a high surrogate waits for its pair

        // pre-tokens of the normalized text; a cut must also fall between clusters that NFC may have changed
        const {text, sourceOffsets, cuttable} = nfcWithOffsets(this.pending.slice(0, end));
        const starts: number[] = [];
        for (const match of text.matchAll(preTokenPattern))
            starts.push(match.index);
        for (let i = starts.length - heldBackPieces; i > 0; i--)
            if (cuttable == null || cuttable[starts[i]] === 1)
                return sourceOffsets == null ? starts[i] : sourceOffsets[starts[i]];
        return 0;
    }

    private commit(boundary: number): CommittedToken[] {
        const given = this.pending.slice(0, boundary);
        this.pending = this.pending.slice(boundary);
        const {text, sourceOffsets} = nfcWithOffsets(given);
        const ids = this.tokenize(text, false);
        const charOfByte = byteToCharOffsets(text);
        const tokens: CommittedToken[] = [];
        let byte = 0;
        for (const id of ids) {
            const char = charOfByte[Math.min(byte, charOfByte.length - 1)];
            tokens.push({id, offset: this.committed + (sourceOffsets == null ? char : sourceOffsets[char])});
            byte += this.tokenByteLength(id);
        }
        this.committed += given.length;
        return tokens;
    }
}

/**
 * Where to cut a tail that is held back too long: 64 characters before its end, moved back to a character that NFC
 * never joins to the one before (not a low surrogate, a combining mark or a conjoining Hangul vowel or final).
 */
function forcedCut(text: string): number {
    const joins = (code: number, char: string) => (code >= 0xdc00 && code <= 0xdfff) || (code >= 0x1160 && code <= 0x11ff) || /\p{M}/u.test(char);
    let cut = text.length - 64;
    while (cut > 0 && joins(text.charCodeAt(cut), text[cut]))
        cut--;
    return cut;
}

/** For each UTF-8 byte of the text (and one past the end), the UTF-16 offset of the character it belongs to. */
function byteToCharOffsets(text: string): Int32Array {
    const offsets = new Int32Array(utf8.encode(text).length + 1);
    let byte = 0;
    for (let char = 0; char < text.length;) {
        const codePoint = text.codePointAt(char)!;
        const units = codePoint > 0xffff ? 2 : 1;
        const bytes = codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
        offsets.fill(char, byte, byte + bytes);
        byte += bytes;
        char += units;
    }
    offsets[byte] = text.length;
    return offsets;
}
