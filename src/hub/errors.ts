// What can go wrong when a model is pulled: one class per failure, each with a message that says what to do.

/** A model could not be pulled or resolved. */
export class PullError extends Error {
    override name = "PullError";
}

/** The hub refused access (401 / 403): a gated or private repository, or a token without access to it. */
export class HubAccessError extends PullError {
    override name = "HubAccessError";
}

/** A repository, revision or file the hub does not have (404). */
export class HubNotFoundError extends PullError {
    override name = "HubNotFoundError";
}

/** The hub (or a URL) could not be reached, or answered with a server error. */
export class HubUnreachableError extends PullError {
    override name = "HubUnreachableError";
}

/** A model that is not in the cache while downloads are off (`HF_HUB_OFFLINE=1`, or `pull: false`). */
export class ModelNotCachedError extends PullError {
    override name = "ModelNotCachedError";
}

/** A repository or file that is not a Qwen3Guard model (or not the variant its name says). */
export class NotAGuardModelError extends PullError {
    override name = "NotAGuardModelError";
}

/** A downloaded file whose bytes do not match the hash the hub reports (the file has been deleted). */
export class ChecksumMismatchError extends PullError {
    override name = "ChecksumMismatchError";
}

/** Too little free space in the cache for the download and the conversion. */
export class InsufficientSpaceError extends PullError {
    override name = "InsufficientSpaceError";
}
