// qwenguard/ai-sdk: the Vercel AI SDK integration, on its own entry point so that the core package never loads the AI SDK.
export {qwenguardMiddleware, GuardFlaggedError} from "./qwenguardMiddleware.js";
export type {MiddlewareFlag, QwenguardMiddleware, QwenguardMiddlewareOptions} from "./qwenguardMiddleware.js";
export {CONTENT_FILTER_FINISH} from "./guardStreamParts.js";
export type {GuardMetadata} from "./guardStreamParts.js";
export {RemoteGuard, RemoteGuardError} from "../remote/RemoteGuard.js";
