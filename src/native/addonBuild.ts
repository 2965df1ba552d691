import {createHash} from "node:crypto";
import {spawnSync} from "node:child_process";
import {existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from "node:fs";
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath} from "node:url";

/** Where the package lives: this file is dist/src/native/addonBuild.js. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

const buildDir = path.join(packageRoot, "build");
/** The compiled addon. */
export const addonPath = path.join(buildDir, "Release", "qwenguard.node");
const stampPath = path.join(buildDir, "qwenguard-addon.json");
const headersDir = path.join(buildDir, "llama.cpp");

const require = createRequire(import.meta.url);

/** The llama.cpp release that node-llama-cpp ships, as written in its package. */
export interface LlamaCppSource {
    /** e.g. `v0.4.0` */
    release: string,
    repo: string,
    /** The git bundle holding that release's source. */
    bundlePath: string,
    /** Folder of node-llama-cpp's prebuilt CPU binaries for this platform (link-time only). */
    prebuiltLibDir: string
}

/** What the stamp beside a built addon records, to tell whether it is stale. */
interface AddonStamp {
    sourcesHash: string,
    release: string,
    commit: string,
    buildSeconds: number
}

export type AddonBuildState =
    | {state: "ready", stamp: AddonStamp}
    | {state: "missing" | "stale", reason: string};

/** Locates node-llama-cpp's llama.cpp source bundle and prebuilt binaries. */
export function locateLlamaCppSource(): LlamaCppSource {
    const nodeLlamaCppDir = findPackageDir(fileURLToPath(import.meta.resolve("node-llama-cpp")), "node-llama-cpp");
    const info = JSON.parse(readFileSync(path.join(nodeLlamaCppDir, "llama", "llama.cpp.info.json"), "utf8")) as {tag: string, llamaCppGithubRepo: string};
    const bundlePath = path.join(nodeLlamaCppDir, "llama", "gitRelease.bundle");
    if (!existsSync(bundlePath))
        throw new Error(`Expected node-llama-cpp's llama.cpp source bundle at ${bundlePath} but it does not exist`);

    const binaryPackage = prebuiltBinaryPackageName();
    let packageDir: string;
    try {
        const nodeLlamaCppRequire = createRequire(path.join(nodeLlamaCppDir, "package.json"));
        packageDir = findPackageDir(nodeLlamaCppRequire.resolve(binaryPackage), binaryPackage);
    } catch {
        throw new Error(`Expected node-llama-cpp's prebuilt binaries package "${binaryPackage}" to be installed but it is not ` +
            "(was npm run with --omit=optional?)");
    }
    const binsDir = path.join(packageDir, "bins");
    const flavours = readdirSync(binsDir);
    if (flavours.length !== 1)
        throw new Error(`Expected one folder in ${binsDir} but found ${flavours.length}`);

    return {release: info.tag, repo: info.llamaCppGithubRepo, bundlePath, prebuiltLibDir: path.join(binsDir, flavours[0])};
}

/** Walks up from a file inside a package to the folder holding that package's package.json. */
function findPackageDir(fileInside: string, name: string): string {
    for (let dir = path.dirname(fileInside); dir !== path.dirname(dir); dir = path.dirname(dir)) {
        const manifest = path.join(dir, "package.json");
        if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as {name?: string}).name === name)
            return dir;
    }
    throw new Error(`Expected the package "${name}" above ${fileInside} but found no package.json naming it`);
}

function prebuiltBinaryPackageName(): string {
    const {platform, arch} = process;
    if (platform === "linux")
        return `@node-llama-cpp/linux-${arch}`;
    if (platform === "darwin")
        return arch === "arm64" ? "@node-llama-cpp/mac-arm64-metal" : "@node-llama-cpp/mac-x64";
    if (platform === "win32")
        return `@node-llama-cpp/win-${arch}`;
    throw new Error(`Platform ${platform}-${arch} is not supported by node-llama-cpp's prebuilt binaries`);
}

/** Hash of everything the addon is compiled from: our native sources, the CMake file and the llama.cpp release. */
export function addonSourcesHash(release: string): string {
    const hash = createHash("sha256");
    hash.update(`llama.cpp ${release}\n`);
    const files = [path.join(packageRoot, "CMakeLists.txt"), ...listNativeSources(path.join(packageRoot, "native"))];
    for (const file of files) {
        hash.update(path.relative(packageRoot, file).split(path.sep).join("/") + "\n");
        hash.update(readFileSync(file));
    }
    return hash.digest("hex");
}

function listNativeSources(dir: string): string[] {
    const result: string[] = [];
    for (const entry of readdirSync(dir, {withFileTypes: true}).sort((a, b) => a.name < b.name ? -1 : 1)) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory())
            result.push(...listNativeSources(full));
        else if (/\.(cpp|h)$/.test(entry.name))
            result.push(full);
    }
    return result;
}

/** Tells whether the compiled addon exists and was built from the current sources. */
export function addonBuildState(): AddonBuildState {
    if (!existsSync(addonPath))
        return {state: "missing", reason: `the native addon ${path.relative(packageRoot, addonPath)} has not been built`};
    if (!existsSync(stampPath))
        return {state: "stale", reason: `the native addon has no build stamp (${path.relative(packageRoot, stampPath)})`};
    const stamp = JSON.parse(readFileSync(stampPath, "utf8")) as AddonStamp;
    const current = addonSourcesHash(locateLlamaCppSource().release);
    if (stamp.sourcesHash !== current)
        return {state: "stale", reason: "the native sources changed since the addon was built"};
    return {state: "ready", stamp};
}

export interface EnsureAddonOptions {
    /** Rebuild even when the addon is up to date. */
    force?: boolean,
    /** Receives progress lines; silent when omitted. */
    log?: (line: string) => void
}

/**
 * Builds the native addon when it is missing, stale, or `force` is set.
 * Only our own sources are compiled (seconds); llama.cpp comes prebuilt with node-llama-cpp.
 * @returns the build state after the call
 * @throws when a build tool is missing or the compilation fails, with the tool's output
 */
export async function ensureAddonBuilt({force = false, log = () => {}}: EnsureAddonOptions = {}): Promise<AddonStamp> {
    const state = addonBuildState();
    if (state.state === "ready" && !force)
        return state.stamp;

    // several processes may start at once (test workers, batch shards): one builds, the others wait for it
    const release = await acquireBuildLock(log);
    try {
        const now = addonBuildState();
        if (now.state === "ready" && !force)
            return now.stamp;  // built by the process we waited for
        return buildAddon(now, log);
    } finally {
        release();
    }
}

const buildLockPath = path.join(buildDir, ".build-lock");
/** A lock older than this is left over from a killed build. */
const staleBuildLockMs = 10 * 60 * 1000;

async function acquireBuildLock(log: (line: string) => void): Promise<() => void> {
    mkdirSync(buildDir, {recursive: true});
    let announced = false;
    for (;;) {
        try {
            mkdirSync(buildLockPath);
            return () => rmSync(buildLockPath, {recursive: true, force: true});
        } catch (error) {
            if ((error as NodeJS.ErrnoException).code !== "EEXIST")
                throw error;
        }
        const lock = statSync(buildLockPath, {throwIfNoEntry: false});
        if (lock == null)
            continue;
        if (Date.now() - lock.mtimeMs > staleBuildLockMs) {
            rmSync(buildLockPath, {recursive: true, force: true});
            continue;
        }
        if (!announced) {
            log("qwenguard: another process is building the native addon; waiting for it");
            announced = true;
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
    }
}

function buildAddon(state: AddonBuildState, log: (line: string) => void): AddonStamp {
    const started = performance.now();
    const source = locateLlamaCppSource();
    log(`qwenguard: building the native addon against llama.cpp ${source.release}` +
        (state.state === "ready" ? "" : ` (${state.reason})`));
    const commit = extractLlamaHeaders(source);
    const cmakeJs = path.join(path.dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
    const nodeAddonApiDir = (require("node-addon-api") as {include_dir: string}).include_dir;
    runTool(process.execPath, [
        cmakeJs, "compile",
        "--directory", packageRoot,
        "--out", buildDir,
        "--log-level", "warn",
        `--CDLLAMA_INCLUDE_DIR=${headersDir}`,
        `--CDLLAMA_LIB_DIR=${source.prebuiltLibDir}`,
        `--CDLLAMA_CPP_RELEASE=${source.release}`,
        `--CDLLAMA_CPP_COMMIT=${commit}`,
        `--CDNODE_ADDON_API_DIR=${path.resolve(packageRoot, nodeAddonApiDir)}`
    ], "cmake-js (is cmake >= 3.19 and a C++17 compiler installed?)");

    const stamp: AddonStamp = {
        sourcesHash: addonSourcesHash(source.release),
        release: source.release,
        commit,
        buildSeconds: Math.round((performance.now() - started) / 100) / 10
    };
    writeFileSync(stampPath, JSON.stringify(stamp, null, 2) + "\n");
    log(`qwenguard: native addon built in ${stamp.buildSeconds} s`);
    return stamp;
}

/** Extracts the headers the build needs from node-llama-cpp's git bundle into build/llama.cpp (never into git). */
function extractLlamaHeaders(source: LlamaCppSource): string {
    const commitFile = path.join(headersDir, "COMMIT");
    const bundleStat = statSync(source.bundlePath);
    const key = `${source.release} ${bundleStat.size}`;
    const keyFile = path.join(headersDir, "BUNDLE");
    if (existsSync(commitFile) && existsSync(keyFile) && readFileSync(keyFile, "utf8") === key)
        return readFileSync(commitFile, "utf8").trim();

    rmSync(headersDir, {recursive: true, force: true});
    mkdirSync(headersDir, {recursive: true});
    const gitDir = path.join(headersDir, ".git");
    runTool("git", ["clone", "--quiet", "--bare", source.bundlePath, gitDir], "git (needed to read node-llama-cpp's llama.cpp bundle)");
    runTool("git", ["--git-dir", gitDir, "--work-tree", headersDir, "checkout", "HEAD", "--", "include", "ggml/include"], "git");
    const commit = runTool("git", ["--git-dir", gitDir, "rev-parse", "HEAD"], "git").trim();
    rmSync(gitDir, {recursive: true, force: true});
    writeFileSync(commitFile, commit + "\n");
    writeFileSync(keyFile, key);
    return commit;
}

function runTool(command: string, args: string[], what: string): string {
    const result = spawnSync(command, args, {cwd: packageRoot, encoding: "utf8", maxBuffer: 64 * 1024 * 1024});
    if (result.error != null)
        throw new Error(`Could not run ${what}: ${result.error.message}`);
    if (result.status !== 0)
        throw new Error(`${what} failed with exit code ${result.status}:\n${(result.stdout ?? "") + (result.stderr ?? "")}`);
    return result.stdout;
}
