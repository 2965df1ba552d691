// The Hugging Face hub conventions qwenguard follows, read from the environment as huggingface_hub reads them:
// HF_ENDPOINT, HF_TOKEN (else the token file under HF_HOME, where `huggingface-cli login` writes it), HF_HUB_OFFLINE.

import {readFileSync} from "node:fs";
import os from "node:os";
import path from "node:path";

/** Where the hub is and how to talk to it. */
export interface HubEnvironment {
    /** The hub's base URL, without a trailing slash (HF_ENDPOINT; default https://huggingface.co). */
    readonly endpoint: string;
    /** The access token for gated and private repositories, if any. */
    readonly token: string | undefined;
    /** Where the token came from ("HF_TOKEN", or the token file's path), for messages. */
    readonly tokenSource: string | undefined;
    /** HF_HUB_OFFLINE is set: nothing may be downloaded. */
    readonly offline: boolean;
}

const TRUE_VALUES = new Set(["1", "on", "yes", "true"]);

/**
 * Read the hub settings from the environment.
 * @param env - the environment (default `process.env`)
 * @example
 * hubEnvironment({HF_ENDPOINT: "http://127.0.0.1:9000/"}).endpoint; // "http://127.0.0.1:9000"
 */
export function hubEnvironment(env: NodeJS.ProcessEnv = process.env): HubEnvironment {
    const endpoint = (env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
    const offline = TRUE_VALUES.has((env.HF_HUB_OFFLINE ?? "").trim().toLowerCase());
    for (const variable of ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] as const) {
        const token = env[variable]?.trim();
        if (token)
            return {endpoint, token, tokenSource: variable, offline};
    }
    const home = env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "huggingface");
    const tokenFile = env.HF_TOKEN_PATH || path.join(home, "token");
    try {
        const token = readFileSync(tokenFile, "utf8").trim();
        if (token)
            return {endpoint, token, tokenSource: tokenFile, offline};
    } catch {
        // no token file: anonymous access
    }
    return {endpoint, token: undefined, tokenSource: undefined, offline};
}
