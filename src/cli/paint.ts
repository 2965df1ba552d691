import {stdout, stderr} from "node:process";

const codes = {red: [31, 39], green: [32, 39], yellow: [33, 39], bold: [1, 22], inverse: [7, 27], dim: [2, 22]} as const;

/** Whether to colour output: a TTY, and NO_COLOR not set. */
export function colorEnabled(stream: {isTTY?: boolean} = stdout): boolean {
    return stream.isTTY === true && process.env.NO_COLOR == null;
}

/** Wraps text in an ANSI style when stderr/stdout is a colour terminal; plain text otherwise. */
export function paint(style: keyof typeof codes, text: string, stream: {isTTY?: boolean} = stderr): string {
    if (!colorEnabled(stream) || text.length === 0)
        return text;
    const [open, close] = codes[style];
    return `\u001b[${open}m${text}\u001b[${close}m`;
}
