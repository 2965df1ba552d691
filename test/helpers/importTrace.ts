// Records every module a process imports, for tests of what a command loads: run a child with
// `node --import <this file, compiled> …` and QWENGUARD_IMPORT_TRACE naming a file; each resolved module URL is
// appended to it, one per line (Node's module customization hooks, which run off the main thread).

import {appendFileSync} from "node:fs";
import {register} from "node:module";
import {isMainThread} from "node:worker_threads";

/** The resolve hook: passes every resolution through and writes down its URL. */
export async function resolve(specifier: string, context: unknown, next: (specifier: string, context: unknown) => Promise<{url: string}>): Promise<{url: string}> {
    const resolved = await next(specifier, context);
    const trace = process.env.QWENGUARD_IMPORT_TRACE;
    if (trace != null)
        appendFileSync(trace, resolved.url + "\n");
    return resolved;
}

// Preloaded with --import (on the main thread), this module registers itself as the hooks module.
if (isMainThread)
    register(import.meta.url);
