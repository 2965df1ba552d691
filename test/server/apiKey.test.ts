// The server's API key check: a pure unit.

import t from "tap";
import {bearerKeyCheck} from "../../src/server/apiKey.js";

t.test("the API key check", async (t) => {
    const check = bearerKeyCheck("s3cret-key");
    t.equal(check("Bearer s3cret-key"), true);
    t.equal(check("bearer  s3cret-key "), true, "the scheme is case-insensitive, spaces around the key do not count");
    for (const header of [undefined, "", "s3cret-key", "Bearer", "Bearer s3cret-ke", "Bearer s3cret-key2", "Basic czNjcmV0LWtleQ=="])
        t.equal(check(header), false, `refused: ${JSON.stringify(header)}`);
});
