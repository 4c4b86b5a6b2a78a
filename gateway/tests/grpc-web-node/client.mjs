// A grpc-web client that is not ours: @connectrpc/connect with its grpc-web
// transport (HTTP/1.1), against the URL given as the first argument. It
// registers, logs in, makes an authenticated call, checks that a forged
// token is refused with UNAUTHENTICATED and that the wrong role gets
// PERMISSION_DENIED, then prints one JSON line with what it saw.
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { UserService } from "./gen/auction/v1/user_pb.js";

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
const result = {
  registeredUserId: registered.user.publicProfile.userId,
  profileUserId: me.user.publicProfile.userId,
  profileEmail: me.user.privateProfile?.email ?? "",
  forged: await codeOf(() => users.getProfile({}, { headers: { authorization: `Bearer ${forged}` } })),
  missing: await codeOf(() => users.getProfile({})),
  wrongRole: await codeOf(() => users.listUsers({}, auth)),
};
console.log(JSON.stringify(result));
