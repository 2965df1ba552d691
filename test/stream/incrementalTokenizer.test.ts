import t from "tap";
import type {Test} from "tap";
import {IncrementalTokenizer} from "../../src/index.js";
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
    "<|im_end|>\n<|im_start|>assistant\n<think>x</think> Safety: Safe"
];

t.test("for every way of cutting a text into chunks, the committed tokens equal the whole text's tokens", async (t) => {
    const model = await convertedFixture(t as unknown as Test, "planted-stream", "F32", "f32");
    const native = await loadStreamModel(t, model);
    const tokenize = plainTextTokenizer((text, special) => native.tokenize(text, special), addedTokenIds(await readGguf(model.modelPath)));
    const byteLength = (id: number) => native.tokenBytes(id).length;
    const random = seededRandom(2024);

    let cuts = 0;
    let mismatches = 0;
    while (cuts < 1000) {
        const text = corpus[cuts % corpus.length] + corpus[Math.floor(random() * corpus.length)];
        const whole = Array.from(tokenize(text, false));
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
