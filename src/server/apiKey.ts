import {createHash, timingSafeEqual} from "node:crypto";

/**
 * A check of `Authorization: Bearer <key>` against the server's key in constant time: both sides are hashed to
 * 32 bytes first, so neither the key's length nor the position of the first differing byte shows in the timing.
 * @returns a function telling whether an Authorization header value carries the key
 */
export function bearerKeyCheck(key: string): (authorization: string | undefined) => boolean {
    const expected = createHash("sha256").update(key, "utf8").digest();
    return (authorization) => {
        const match = /^Bearer\s+(.+)$/i.exec(authorization ?? "");
        const given = createHash("sha256").update(match?.[1].trim() ?? "", "utf8").digest();
        return timingSafeEqual(given, expected) && match != null;
    };
}
