// A grpc-web client that is not ours: @connectrpc/connect with its grpc-web
// transport (HTTP/1.1), against the URL given as the first argument. It
// registers, logs in, makes an authenticated call; tries a forged, an
// expired and a wrong-key token (the last two minted by the Rust test and
// passed in EXPIRED_TOKEN and WRONG_KEY_TOKEN), the wrong role, a reused
// refresh token (and the rotated one after it), an API key before and after
// its revocation and a burst over the API-key rate limit; then prints one
// JSON line with what it saw.
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { ApiKeyScope, UserService } from "./gen/auction/v1/user_pb.js";

const baseUrl = process.argv[2];
const transport = createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
const users = createClient(UserService, transport);
const handle = `web_${Date.now().toString(36)}`;
const email = `${handle}@test.auction.local`;
const password = "correct horse battery staple";
const requestId = () => `${Date.now()}-${Math.random().toString(36).slice(2)}`;

async function codeOf(call) {
  try {
    await call();
    return "OK";
  } catch (error) {
    const connectError = ConnectError.from(error);
    if (process.env.DEBUG_CLIENT) console.error(Code[connectError.code], connectError.rawMessage, connectError.cause);
    return Code[connectError.code];
  }
}

const registered = await users.register({ requestId: requestId(), email, password, handle });
const login = await users.login({ requestId: requestId(), email, password });
if (login.outcome.case !== "tokens") throw new Error("login returned no tokens");
const auth = { headers: { authorization: `Bearer ${login.outcome.value.accessToken}` } };
const me = await users.getProfile({}, auth);
const [header, payload] = login.outcome.value.accessToken.split(".");
const forged = `${header}.${payload}.${"A".repeat(86)}`;
const bearer = (token) => ({ headers: { authorization: `Bearer ${token}` } });
const userId = registered.user.publicProfile.userId;
const result = {
  registeredUserId: userId,
  profileUserId: me.user.publicProfile.userId,
  profileEmail: me.user.privateProfile?.email ?? "",
  forged: await codeOf(() => users.getProfile({}, bearer(forged))),
  expired: await codeOf(() => users.getProfile({}, bearer(process.env.EXPIRED_TOKEN))),
  wrongKey: await codeOf(() => users.getProfile({}, bearer(process.env.WRONG_KEY_TOKEN))),
  missing: await codeOf(() => users.getProfile({})),
  wrongRole: await codeOf(() => users.listUsers({}, auth)),
};

// Refresh rotation: the first use rotates; using the spent token again
// revokes the whole family, so the rotated token stops working too.
const spent = login.outcome.value.refreshToken;
const rotated = await users.refresh({ requestId: requestId(), refreshToken: spent });
result.refreshReused = await codeOf(() => users.refresh({ requestId: requestId(), refreshToken: spent }));
result.rotatedAfterReuse = await codeOf(() =>
  users.refresh({ requestId: requestId(), refreshToken: rotated.tokens.refreshToken }),
);

// An API key: works, trips its rate limit in a burst, stops once revoked.
const again = await users.login({ requestId: requestId(), email, password });
const fresh = bearer(again.outcome.value.accessToken);
const created = await users.createApiKey(
  { requestId: requestId(), name: "web", scopes: [ApiKeyScope.READ] },
  fresh,
);
const withKey = { headers: { "x-api-key": created.secret } };
result.apiKey = await codeOf(() => users.getReputation({ userId }, withKey));
const burst = [];
for (let index = 0; index < 8; index += 1) {
  burst.push(await codeOf(() => users.getReputation({ userId }, withKey)));
}
result.apiKeyBurst = burst;
await users.revokeApiKey({ requestId: requestId(), apiKeyId: created.apiKey.apiKeyId }, fresh);
result.revokedApiKey = await codeOf(() => users.getReputation({ userId }, withKey));
console.log(JSON.stringify(result));
