/** A mistake in how the CLI was called or in its input: reported on stderr with exit code 2. */
export class UsageError extends Error {
    override name = "UsageError";
}
