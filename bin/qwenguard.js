#!/usr/bin/env node
// Hands over to the compiled CLI (src/cli/main.ts).
import {main} from "../dist/src/cli/main.js";

// A reader that goes away (`qwenguard check … | head -1`) ends the run quietly with the status of a SIGPIPE, as any
// command line tool does; any other failure to write the output is said on stderr.
process.stdout.on("error", (error) => {
    if (error.code === "EPIPE")
        process.exit(141);
    process.stderr.write(`qwenguard: cannot write the output: ${error.message}\n`);
    process.exit(2);
});

process.exitCode = await main(process.argv.slice(2));
