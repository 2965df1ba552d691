// npm "install" hook. In a published package (dist/ present) it builds the native addon if it is missing or
// stale. In a source checkout dist/ does not exist yet at this point: "prepare" (npm run build) builds both.
import {existsSync} from "node:fs";
import {fileURLToPath} from "node:url";

const buildModule = new URL("../dist/src/native/addonBuild.js", import.meta.url);
if (existsSync(fileURLToPath(buildModule))) {
    const {ensureAddonBuilt} = await import(buildModule.href);
    await ensureAddonBuilt({log: (line) => process.stderr.write(line + "\n")});
}
