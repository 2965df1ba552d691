// Builds the native addon (`npm run build` runs it after tsc; `--force` rebuilds even when up to date).
import {ensureAddonBuilt} from "../dist/src/native/addonBuild.js";

const force = process.argv.includes("--force");
try {
    await ensureAddonBuilt({force, log: (line) => process.stderr.write(line + "\n")});
} catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
}
