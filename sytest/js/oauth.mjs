#!/usr/bin/env node
// matrix-js-sdk's OAuth 2.0 client (the one Element Web uses) against
// Haven's OAuth 2.0 API:
//
//   node oauth.mjs http://127.0.0.1:8008 alice password-alice
//
// The SDK reads the server metadata, registers a web client, builds the
// authorization URL (PKCE S256, fragment response mode, its own scope); a
// small cookie-keeping browser signs the user in on Haven's page and
// allows the client; the SDK exchanges the code, the session is used,
// refreshed (the old refresh token then refused) and revoked. Exit 0 when
// every step worked.

// matrix-js-sdk 43 uses Promise.withResolvers (Node 22); Node 20 lacks it.
if (typeof Promise.withResolvers !== "function") {
  Object.defineProperty(Promise, "withResolvers", {
    configurable: true,
    writable: true,
    value: function withResolvers() {
      let resolve;
      let reject;
      const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

import process from "node:process";

// The SDK logs through console; keep its lines out of the way.
for (const level of ["trace", "debug", "info", "log", "warn", "error"]) console[level] = () => {};

const { createClient, OAuth2 } = await import("matrix-js-sdk");

const [baseUrl, user, password] = process.argv.slice(2);
if (!baseUrl || !user || !password) {
  process.stdout.write("usage: node oauth.mjs <homeserver URL> <user> <password>\n");
  process.exit(2);
}

function step(text) {
  process.stdout.write(`ok   ${text}\n`);
}
function fail(text) {
  process.stdout.write(`FAIL ${text}\n`);
  process.exit(1);
}

// A browser that keeps cookies and does not follow redirects.
const cookies = new Map();
async function browse(url, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (cookies.size) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  const res = await fetch(url, { ...init, headers, redirect: "manual" });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(";");
    const i = pair.indexOf("=");
    cookies.set(pair.slice(0, i), pair.slice(i + 1));
  }
  return res;
}
function field(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]+)"`));
  if (!m) fail(`no ${name} field in the page:\n${html}`);
  return m[1];
}
function postForm(url, values) {
  return browse(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(values).toString(),
  });
}

const client = createClient({ baseUrl });
const meta = await client.getAuthMetadata();
step(`auth metadata: issuer ${meta.issuer}`);

const redirect = "http://localhost:8080/oauth-callback";
const clientId = await OAuth2.registerClient(meta, {
  client_name: "matrix-js-sdk sytest",
  client_uri: "http://localhost:8080",
  application_type: "web",
  redirect_uris: [redirect],
  tos_uri: "http://localhost:8080/tos",
});
step(`registered client ${clientId}`);

const deviceId = "JSSDKOAUTH1";
const oauth = new OAuth2(meta, { clientId, deviceId });
const state = "js-sdk-state";
const authUrl = await oauth.generateAuthorizationCodeGrantUrl(state, redirect);

let res = await browse(authUrl);
if (res.status !== 303) fail(`authorization endpoint: ${res.status} ${await res.text()}`);
res = await browse(new URL(res.headers.get("location"), baseUrl));
let html = await res.text();
const sealed = field(html, "oauth");
res = await postForm(`${baseUrl}/_haven/signin`, { csrf: field(html, "csrf"), oauth: sealed, username: user, password, code: "" });
html = await res.text();
if (res.status !== 200 || !html.includes("matrix-js-sdk sytest")) fail(`sign-in: ${res.status}\n${html}`);
step("signed in on Haven's page; consent page names the client");
res = await postForm(`${baseUrl}/_haven/oauth2/consent`, { csrf: field(html, "csrf"), oauth: sealed, action: "allow" });
const back = new URL(res.headers.get("location") || "");
const answer = new URLSearchParams(back.hash.slice(1));
if (res.status !== 303 || back.origin + back.pathname !== redirect || answer.get("state") !== state || !answer.get("code")) {
  fail(`consent sent the browser to ${back}`);
}
step("the client got its code in the fragment");

const tokens = await oauth.completeAuthorizationCodeGrant(answer.get("code"), redirect);
if (!tokens.access_token || !tokens.refresh_token) fail(`token response ${JSON.stringify(tokens)}`);
const whoami = (token) => createClient({ baseUrl, accessToken: token, deviceId }).whoami();
let who = await whoami(tokens.access_token);
if (who.device_id !== deviceId || !who.user_id.startsWith(`@${user}:`)) fail(`whoami ${JSON.stringify(who)}`);
step(`code exchanged: ${who.user_id} on device ${who.device_id}`);

const refreshed = await oauth.performRefreshTokenGrant(tokens.refresh_token);
if (refreshed.access_token === tokens.access_token || refreshed.refresh_token === tokens.refresh_token) fail("refresh did not rotate the tokens");
who = await whoami(refreshed.access_token);
if (who.device_id !== deviceId) fail(`whoami after refresh ${JSON.stringify(who)}`);
let refused = false;
try {
  await oauth.performRefreshTokenGrant(tokens.refresh_token);
} catch {
  refused = true;
}
if (!refused) fail("the replaced refresh token still works");
step("refreshed; the replaced refresh token is refused");

await oauth.revokeToken(refreshed.access_token, "access_token");
try {
  await whoami(refreshed.access_token);
  fail("the revoked access token still works");
} catch (e) {
  if (e.errcode !== "M_UNKNOWN_TOKEN") fail(`after revocation: ${e}`);
}
step("revoked: the token is M_UNKNOWN_TOKEN");
process.exit(0);
