import {getRuntimeInfo} from "../native/runtimeInfo.js";

/** `qwenguard --version`: the package version, the llama.cpp release and the backend, from the addon itself. */
export async function printVersion(write: (text: string) => void): Promise<void> {
    const info = await getRuntimeInfo();
    const {llamaCpp} = info;
    write(`qwenguard ${info.version}\n`);
    write(`llama.cpp ${llamaCpp.release} (commit ${llamaCpp.commit.slice(0, 7)}, libllama ${llamaCpp.llamaVersion})\n`);
    write(`backend ${info.backend}\n`);
}
