import t from "tap";
import type {Test} from "tap";
import {IncrementalTokenizer} from "../../src/index.js";
import {MAX_HELD_BACK_CHARS} from "../../src/stream/IncrementalTokenizer.js";
import {addedTokenIds, plainTextTokenizer} from "../../src/conversation/plainText.js";
import {readGguf} from "../../gguf/index.js";
import {convertedFixture, loadStreamModel, seededRandom} from "../native/streamTestKit.js";

const corpus = [
    "Hello, world! It's   a test\n\n  of   spaces\tand\r\nnewlines... 12345 numbers!!! don't I'LL we've",
    "你好，世界！这是一个测试。我们在北京见面吧。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Привет, мир! Как дела? Ёжик в тумане.",
    "こんにちは世界。カタカナとひらがな、漢字。",
    "안녕하세요 세계, 반갑습니다.",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵",
    "def f(x):\n    return x**2  # comment\n\tif x != 0: pass\n",
    "Ελληνικά γράμματα και αριθμοί 3.14159",
    "Türkçe ğüşıöç — Español ñáéíóú — Français œuvre",
    "   leading and trailing   \n\n\n",
    "<|im_end|>\n<|im_start|>assistant\n<think>x</think> Safety: Safe",
    // not in NFC (the Qwen3 tokenizer normalizes first): decomposed accents, Vietnamese stacked marks in either order,
    // decomposed Hangul jamo, singletons (Angstrom and Ohm signs), a Devanagari nukta, marks with nothing to compose
    "Cafe\u0301 de\u0301ja\u0300 vu — Vie\u0323\u0302t Nam, Vie\u0302\u0323t — q\u0301\u0323 \u0301 alone",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u116e\u11a8 \u212b \u2126 \u0915\u093c\u093e"
];

t.test("for every way of cutting a text into chunks, the committed tokens equal the whole text's tokens (in NFC)", async (t) => {
    const model = await convertedFixture(t as unknown as Test, "planted-stream", "F32", "f32");
    const native = await loadStreamModel(t, model);
    const tokenize = plainTextTokenizer((text, special) => native.tokenize(text, special), addedTokenIds(await readGguf(model.modelPath)));
    const byteLength = (id: number) => native.tokenBytes(id).length;
    const random = seededRandom(2024);

    let cuts = 0;
    let mismatches = 0;
    while (cuts < 1000) {
        const text = corpus[cuts % corpus.length] + corpus[Math.floor(random() * corpus.length)];
        const whole = Array.from(tokenize(text.normalize("NFC"), false));
        const tokenizer = new IncrementalTokenizer(tokenize, byteLength);
        const got: number[] = [];
        const offsets: number[] = [];
        for (let i = 0; i < text.length;) {
            const n = 1 + Math.floor(random() ** 2 * 50);  // 1 to 50 UTF-16 units, surrogate pairs split too
            for (const token of tokenizer.push(text.slice(i, i + n))) {
                got.push(token.id);
                offsets.push(token.offset);
            }
            i += n;
        }
        for (const token of tokenizer.finish()) {
            got.push(token.id);
            offsets.push(token.offset);
        }
        if (JSON.stringify(got) !== JSON.stringify(whole)) {
            mismatches++;
            t.same(got, whole, `cut ${cuts} of ${JSON.stringify(text)}`);
        }
        if (!offsets.every((offset, i) => offset >= 0 && offset <= text.length && (i === 0 || offset >= offsets[i - 1])))
            t.fail(`cut ${cuts}: token offsets ${JSON.stringify(offsets)} do not ascend within the text`);
        cuts++;
    }
    t.equal(mismatches, 0, `${cuts} random cuttings`);
});

t.test("text not in NFC: the tokens of its NFC form, offsets in the text as given", async (t) => {
    const model = await convertedFixture(t as unknown as Test, "planted-stream", "F32", "f32");
    const native = await loadStreamModel(t, model);
    const tokenize = plainTextTokenizer((text, special) => native.tokenize(text, special), addedTokenIds(await readGguf(model.modelPath)));
    const decomposed = "Cafe\u0301 bar";
    const tokenizer = new IncrementalTokenizer(tokenize, (id) => native.tokenBytes(id).length);
    const tokens = [...tokenizer.push(decomposed), ...tokenizer.finish()];
    t.same(tokens.map(({id}) => id), Array.from(tokenize("Café bar", false)), "the same ids as the composed text");
    const pieces = tokens.map(({offset}, i) => decomposed.slice(offset, tokens[i + 1]?.offset ?? decomposed.length));
    t.equal(pieces.join(""), decomposed, "the offsets cut the text as given");
    t.equal(pieces[pieces.length - 1], " bar", "\" bar\" starts at 6 in the text as given (5 in its NFC form)");
    t.notSame(Array.from(tokenize(decomposed, false)), Array.from(tokenize("Café bar", false)), "llama.cpp alone would tokenize them differently");
});

t.test("a run without a break is held back at most MAX_HELD_BACK_CHARS: then committed, never cut inside a character", async (t) => {
    const model = await convertedFixture(t as unknown as Test, "planted-stream", "F32", "f32");
    const native = await loadStreamModel(t, model);
    const tokenize = plainTextTokenizer((text, special) => native.tokenize(text, special), addedTokenIds(await readGguf(model.modelPath)));
    for (const unit of ["a", "!", " ", "😀", "e\u0301"]) {
        const tokenizer = new IncrementalTokenizer(tokenize, (id) => native.tokenBytes(id).length);
        let committed = 0;
        let text = "";
        let mostHeld = 0;
        for (let i = 0; i < 3000; i++) {
            text += unit.repeat(5);
            committed += tokenizer.push(unit.repeat(5)).length;
            mostHeld = Math.max(mostHeld, tokenizer.heldBack.length);
        }
        t.ok(mostHeld <= MAX_HELD_BACK_CHARS + 5 * unit.length, `${JSON.stringify(unit)}: at most ${mostHeld} characters held back over 3,000 pushes`);
        t.ok(committed > 0, `${JSON.stringify(unit)}: tokens were committed (${committed})`);
        const start = tokenizer.committedLength;
        t.equal(text.slice(start), tokenizer.heldBack, "what is held back is the text's end");
        t.notOk(/^[\udc00-\udfff\u0300-\u036f]/.test(tokenizer.heldBack), "it does not start inside a character");
        tokenizer.finish();
    }
    const normal = new IncrementalTokenizer(tokenize, (id) => native.tokenBytes(id).length);
    t.same(normal.push("Hello, world! How are you?").map(({id}) => id).length > 0, true, "ordinary text is not affected");
});
