#!/usr/bin/env node
// A real matrix-js-sdk client (what Element Web is built on) driving Haven.
//
//   node smoke.mjs http://127.0.0.1:8008 [smoke|e2ee|sliding]   (or HAVEN_URL=... node smoke.mjs)
//   node smoke.mjs URL_OF_SITE_A e2ee-federation URL_OF_SITE_B
//
// "e2ee" runs the end-to-end encryption story of e2ee.mjs instead of the one
// below, with the same harness (recording fetch, CORS checks, report);
// "e2ee-federation" the one of e2ee-federation.mjs, across two federating
// servers (its second URL may also come from HAVEN_URL_B).
//
// Two fresh users register through the SDK's own user-interactive-auth flow
// (m.login.dummy), log in as Element does, start their clients with Element's
// start options and then talk to each other in a private, unencrypted room:
// invite, join, messages both ways, typing, read receipts, read markers, a
// display name change, a burst of messages, and finally new devices that page
// back through the whole room with scrollback and with a TimelineWindow (the
// paths Element's timeline uses).
//
// Every HTTP request the SDK makes goes through a recording fetch that also
// does what a browser does for Element Web on another origin: a CORS
// preflight for each non-simple request and a check of the CORS headers of
// every answer. The script exits 0 only if every step worked and no request
// answered something a working server should not (5xx, an unrouted 404, a
// CORS failure); it prints each step, every request with its status, and on
// failure the step, the SDK's error and the SDK's recent log lines.
//
// Environment: SMOKE_STEP_TIMEOUT_MS (default 20000) bounds every wait;
// SMOKE_DEBUG=1 prints the SDK's own log as it goes; SMOKE_DUMP_SYNC=<dir>
// writes every /sync response body there; SMOKE_CONTROL=1 says that the
// process running the script acts on the servers when asked (see control).

import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import process from "node:process";
import { format } from "node:util";

// matrix-js-sdk 43 declares Node >= 22. The one newer built-in it relies on
// that Node 20 lacks is Promise.withResolvers (ES2024), used by its HTTP
// layer, scheduler, sync loop and user-interactive auth (others, such as
// Uint8Array.toBase64, it feature-detects). It must exist before the SDK loads.
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

// ---------------------------------------------------------------- output ---

const T0 = Date.now();
const DEBUG = Boolean(process.env.SMOKE_DEBUG);
const STEP_MS = Number(process.env.SMOKE_STEP_TIMEOUT_MS) || 20000;
const DUMP_DIR = process.env.SMOKE_DUMP_SYNC || "";
if (DUMP_DIR) mkdirSync(DUMP_DIR, { recursive: true });

function out(line = "") {
  process.stdout.write(line + "\n");
}

function since() {
  return ((Date.now() - T0) / 1000).toFixed(3).padStart(7) + "s";
}

// The SDK logs through loglevel onto console.*; keep those lines for the
// failure report instead of flooding the output.
const sdkLog = [];
const SDK_LOG_KEEP = 80;
for (const level of ["trace", "debug", "info", "log", "warn", "error"]) {
  console[level] = (...args) => {
    let line = `${since()} [sdk ${level}] ${format(...args)}`;
    const lines = line.split("\n");
    if (lines.length > 8) line = [...lines.slice(0, 8), `    … (${lines.length - 8} more lines)`].join("\n");
    sdkLog.push(line);
    if (sdkLog.length > SDK_LOG_KEEP) sdkLog.shift();
    if (DEBUG) process.stderr.write(line + "\n");
  };
}

const notes = []; // worth knowing, not a failure
function note(text) {
  notes.push(text);
  out(`        note: ${text}`);
}

const unhandled = [];
process.on("unhandledRejection", (reason) => {
  unhandled.push(describeError(reason));
});

const sdk = await import("matrix-js-sdk");
const {
  createClient,
  ClientEvent,
  RoomEvent,
  RoomMemberEvent,
  InteractiveAuth,
  PendingEventOrdering,
  TimelineWindow,
  MatrixError,
  SUPPORTED_MATRIX_VERSIONS,
} = sdk;

// ------------------------------------------------------------- arguments ---

const baseUrl = (process.argv[2] || process.env.HAVEN_URL || "").replace(/\/+$/, "");
if (!/^https?:\/\//.test(baseUrl)) {
  out("usage: node smoke.mjs <homeserver URL>   (or set HAVEN_URL)");
  process.exit(2);
}
let sdkVersion = "?";
try {
  const pkg = await import("matrix-js-sdk/package.json", { with: { type: "json" } });
  sdkVersion = pkg.default.version;
} catch {
  // Only used for the banner.
}
// The second server of a two-server scenario.
const baseUrlB = (process.argv[4] || process.env.HAVEN_URL_B || "").replace(/\/+$/, "");
if (baseUrlB && !/^https?:\/\//.test(baseUrlB)) {
  out(`the second homeserver URL ${JSON.stringify(baseUrlB)} is not an http(s) URL`);
  process.exit(2);
}
out(`matrix-js-sdk ${sdkVersion} on Node ${process.versions.node} against ${baseUrl}${baseUrlB ? ` and ${baseUrlB}` : ""}`);
out(`every wait is bounded by ${STEP_MS} ms`);

// ------------------------------------------------ recording, CORS-checking fetch ---

const ORIGIN = "http://localhost:8080"; // where a self-hosted Element Web would be served from
const httpLog = [];
const corsProblems = [];
const preflightDone = new Map(); // "METHOD path" -> promise

function redact(search) {
  return search.replace(/(access_token=)[^&]*/g, "$1<redacted>");
}

function decodeSeg(seg) {
  try {
    return decodeURIComponent(seg);
  } catch {
    return seg;
  }
}

// The endpoint a path belongs to: IDs and transaction IDs become placeholders.
function endpointOf(pathname) {
  const segs = pathname.split("/");
  return segs
    .map((seg, i) => {
      const d = decodeSeg(seg);
      const names = { "!": "{roomId}", "@": "{userId}", $: "{eventId}", "#": "{roomAlias}" };
      if (d.length > 1 && names[d[0]]) return names[d[0]];
      if (segs[i - 2] === "send" || segs[i - 2] === "redact") return "{txnId}";
      if (segs[i - 1] === "filter" && i === segs.length - 1) return "{filterId}";
      if (segs[i - 1] === "devices" && i === segs.length - 1) return "{deviceId}";
      return seg;
    })
    .join("/");
}

// What a browser checks before it lets a cross-origin request through.
function preflight(label, method, url, headers) {
  const names = Object.keys(headers || {}).map((h) => h.toLowerCase());
  const safelisted = new Set(["accept", "accept-language", "content-language"]);
  const nonSimpleHeaders = names.filter((h) => !safelisted.has(h)).sort();
  const ctype = String(
    Object.entries(headers || {}).find(([k]) => k.toLowerCase() === "content-type")?.[1] || "",
  ).split(";")[0].trim().toLowerCase();
  const simpleCtype = ["", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"];
  const needsPreflight =
    !["GET", "HEAD", "POST"].includes(method) ||
    nonSimpleHeaders.some((h) => h !== "content-type") ||
    (names.includes("content-type") && !simpleCtype.includes(ctype));
  if (!needsPreflight) return Promise.resolve();
  const key = `${method} ${url.host}${url.pathname}`;
  if (preflightDone.has(key)) return preflightDone.get(key);
  const p = (async () => {
    const rec = {
      n: httpLog.length + 1,
      at: since(),
      label: `${label}/cors`,
      method: "OPTIONS",
      path: url.pathname,
      endpoint: endpointOf(url.pathname),
      status: "pending",
    };
    httpLog.push(rec);
    const started = Date.now();
    let res;
    try {
      res = await fetch(url, {
        method: "OPTIONS",
        headers: {
          Origin: ORIGIN,
          "Access-Control-Request-Method": method,
          ...(nonSimpleHeaders.length ? { "Access-Control-Request-Headers": nonSimpleHeaders.join(",") } : {}),
        },
      });
      await res.arrayBuffer();
    } catch (e) {
      rec.status = `network error: ${e.message}`;
      if (downHosts.has(url.host)) {
        // Its server is stopped on purpose: an outage, not a CORS fault;
        // the preflight is made again once the server is back.
        rec.outage = true;
        preflightDone.delete(key);
        return;
      }
      corsProblems.push(`preflight of ${method} ${endpointOf(url.pathname)} failed: ${e.message}`);
      return;
    }
    rec.status = res.status;
    rec.ms = Date.now() - started;
    const h = (n) => res.headers.get(n) || "";
    const why = [];
    if (res.status < 200 || res.status > 299) why.push(`status ${res.status}`);
    const acao = h("access-control-allow-origin");
    if (acao !== "*" && acao !== ORIGIN) why.push(`Access-Control-Allow-Origin is "${acao}"`);
    const methods = h("access-control-allow-methods").split(",").map((s) => s.trim().toUpperCase());
    if (!methods.includes(method) && !methods.includes("*")) {
      why.push(`Access-Control-Allow-Methods "${h("access-control-allow-methods")}" lacks ${method}`);
    }
    const allowed = h("access-control-allow-headers").split(",").map((s) => s.trim().toLowerCase());
    for (const name of nonSimpleHeaders) {
      // A "*" wildcard never covers Authorization (Fetch standard).
      if (!allowed.includes(name) && !(allowed.includes("*") && name !== "authorization")) {
        why.push(`Access-Control-Allow-Headers "${h("access-control-allow-headers")}" lacks ${name}`);
      }
    }
    if (why.length) {
      rec.problem = `CORS preflight refused: ${why.join("; ")}`;
      corsProblems.push(`preflight of ${method} ${endpointOf(url.pathname)}: ${why.join("; ")}`);
    }
  })();
  preflightDone.set(key, p);
  return p;
}

// Hosts of servers stopped on purpose (see control): a request to one that
// fails or answers 5xx meanwhile is what a client sees during an outage,
// not a fault of the server.
const downHosts = new Set();

function recordingFetch(label) {
  return async (resource, init = {}) => {
    const url = new URL(resource instanceof Request ? resource.url : String(resource));
    const method = String(init.method || (resource instanceof Request ? resource.method : "GET")).toUpperCase();
    const headers = { ...(init.headers || {}) };
    await preflight(label, method, url, headers);
    headers.Origin = ORIGIN;
    const rec = {
      n: httpLog.length + 1,
      at: since(),
      label,
      method,
      path: url.pathname + redact(url.search),
      endpoint: endpointOf(url.pathname),
      status: "pending",
    };
    httpLog.push(rec);
    const started = Date.now();
    if (downHosts.has(url.host)) rec.outage = true;
    let res;
    try {
      res = await fetch(url, { ...init, headers });
    } catch (e) {
      rec.ms = Date.now() - started;
      rec.status = init.signal?.aborted ? "aborted" : `network error: ${e.cause?.message || e.message}`;
      if (downHosts.has(url.host)) rec.outage = true;
      throw e;
    }
    rec.status = res.status;
    rec.ms = Date.now() - started;
    // 499: a long-poll its server cancelled as it stopped.
    if (res.status >= 499 && downHosts.has(url.host)) rec.outage = true;
    const acao = res.headers.get("access-control-allow-origin");
    if (acao !== "*" && acao !== ORIGIN) {
      rec.problem = `no usable Access-Control-Allow-Origin (got ${JSON.stringify(acao)}): a browser hides this answer from Element Web`;
      corsProblems.push(`${method} ${rec.endpoint} → ${res.status}: ${rec.problem}`);
    }
    if (DUMP_DIR && res.ok && /\/sync$/.test(url.pathname)) {
      const file = `${DUMP_DIR}/${String(rec.n).padStart(4, "0")}-${label}-sync.json`;
      res
        .clone()
        .text()
        .then((text) => writeFileSync(file, text))
        .catch(() => {});
    }
    if (res.status >= 400) {
      try {
        const text = await res.clone().text();
        rec.body = text.length > 400 ? text.slice(0, 400) + "…" : text;
        const json = JSON.parse(text);
        rec.errcode = json.errcode;
        rec.uia = Array.isArray(json.flows);
      } catch {
        rec.notJson = true;
      }
    }
    return res;
  };
}

// ------------------------------------------------------------- helpers ---

function describeError(e) {
  if (e instanceof MatrixError || (e && e.httpStatus !== undefined && e.errcode !== undefined)) {
    return `MatrixError ${e.httpStatus} ${e.errcode}: ${e.data?.error ?? e.message}` + (e.url ? ` (${e.url})` : "");
  }
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return format(e);
}

// Resolves with the listener's arguments once pred(...args) is true for an
// emitted event; rejects after STEP_MS. Subscribe before acting.
function expectEvent(desc, emitter, name, pred) {
  let done = false;
  const p = new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      if (done) return;
      let ok;
      try {
        ok = pred(...args);
      } catch (e) {
        ok = false;
        finish();
        reject(e);
        return;
      }
      if (ok) {
        finish();
        resolve(args);
      }
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`timed out after ${STEP_MS} ms waiting for ${desc}`));
    }, STEP_MS);
    function finish() {
      done = true;
      clearTimeout(timer);
      emitter.off(name, onEvent);
    }
    emitter.on(name, onEvent);
  });
  p.catch(() => {}); // awaited later; never an unhandled rejection
  return p;
}

// Resolves once check() returns a truthy value, re-checking whenever one of
// the (emitter, event) pairs fires and every 100 ms.
function waitUntil(desc, subs, check, explain) {
  return new Promise((resolve, reject) => {
    let done = false;
    const tryCheck = () => {
      if (done) return;
      let v;
      try {
        v = check();
      } catch (e) {
        finish();
        reject(e);
        return;
      }
      if (v) {
        finish();
        resolve(v);
      }
    };
    const timer = setTimeout(() => {
      finish();
      let extra = "";
      try {
        extra = explain ? ` (${explain()})` : "";
      } catch {
        // best effort
      }
      reject(new Error(`timed out after ${STEP_MS} ms waiting for ${desc}${extra}`));
    }, STEP_MS);
    const tick = setInterval(tryCheck, 100);
    function finish() {
      done = true;
      clearTimeout(timer);
      clearInterval(tick);
      for (const [em, name] of subs) em.off(name, tryCheck);
    }
    for (const [em, name] of subs) em.on(name, tryCheck);
    tryCheck();
  });
}

class StepFailure extends Error {}
function must(cond, message) {
  if (!cond) throw new StepFailure(message);
}

const steps = [];
let stepNo = 0;

// Runs one step. A failed step stops the story, unless it is marked soft:
// nothing later depends on it, so the story goes on to find more problems
// (the run still fails).
async function step(name, fn, { soft = false } = {}) {
  stepNo++;
  const no = stepNo;
  out(`${since()} [${String(no).padStart(2)}] ${name} …`);
  const started = Date.now();
  let backstop;
  try {
    const result = await Promise.race([
      fn(),
      new Promise((_, reject) => {
        backstop = setTimeout(() => reject(new Error(`step did not finish within ${2 * STEP_MS} ms`)), 2 * STEP_MS);
      }),
    ]);
    out(`${since()} [${String(no).padStart(2)}] ok (${Date.now() - started} ms)`);
    steps.push({ no, name, ok: true });
    return result;
  } catch (e) {
    steps.push({ no, name, ok: false, error: e });
    out(`${since()} [${String(no).padStart(2)}] FAILED (${Date.now() - started} ms): ${describeError(e)}`);
    if (!soft) throw e;
    out(`        (nothing later depends on this step: going on)`);
    return undefined;
  } finally {
    clearTimeout(backstop);
  }
}

const clients = new Map(); // label -> client
const syncStates = new Map(); // label -> [{state, error}]

// What Element passes to createClient (MatrixClientPeg): timeline support on.
function newClient(label, creds, extra = {}) {
  const client = createClient({
    baseUrl,
    fetchFn: recordingFetch(label),
    timelineSupport: true,
    ...extra,
    ...(creds
      ? { userId: creds.user_id, deviceId: creds.device_id, accessToken: creds.access_token }
      : {}),
  });
  if (creds) {
    clients.set(label, client);
    const states = [];
    syncStates.set(label, states);
    client.on(ClientEvent.Sync, (state, _prev, data) => {
      states.push({ state, at: since(), error: data?.error ? describeError(data.error) : undefined });
    });
  }
  return client;
}

// What Element passes to startClient (MatrixClientPeg.assign), less the
// well-known polling, which would go to https://<server name>/.well-known.
const START_OPTS = {
  initialSyncLimit: 20,
  lazyLoadMembers: true,
  pendingEventOrdering: PendingEventOrdering.Detached,
  threadSupport: true,
};

async function startAndWaitForSync(label, client) {
  const ready = waitUntil(
    `${label}'s first /sync (sync state PREPARED)`,
    [[client, ClientEvent.Sync]],
    () => ["PREPARED", "SYNCING"].includes(client.getSyncState()),
    () => {
      const states = syncStates.get(label) || [];
      const last = states[states.length - 1];
      return last ? `last sync state ${last.state}${last.error ? ": " + last.error : ""}` : "no sync state yet";
    },
  );
  await client.startClient(START_OPTS);
  await ready;
}

function answered(label, method, endpointEnd) {
  return httpLog.find(
    (r) =>
      r.label === label &&
      r.method === method &&
      r.endpoint.endsWith(endpointEnd) &&
      typeof r.status === "number" &&
      r.status >= 200 &&
      r.status < 300,
  );
}

function liveEvents(room) {
  return room.getLiveTimeline().getEvents();
}

function bodyOf(ev) {
  return ev.getContent()?.body;
}

// Waits until the sender's own client shows its message exactly once, as a
// remote echo (status null) with no pending copy left: what Element renders.
function ownEcho(label, client, roomId, eventId, body) {
  return waitUntil(
    `${label}'s own message "${body}" to come back once through /sync`,
    [
      [client, RoomEvent.Timeline],
      [client, RoomEvent.LocalEchoUpdated],
    ],
    () => {
      const room = client.getRoom(roomId);
      if (!room) return false;
      const copies = liveEvents(room).filter((e) => e.getId() === eventId || bodyOf(e) === body);
      const pending = room.getPendingEvents().filter((e) => bodyOf(e) === body);
      return copies.length === 1 && copies[0].getId() === eventId && copies[0].status === null && pending.length === 0;
    },
    () => {
      const room = client.getRoom(roomId);
      const copies = liveEvents(room).filter((e) => bodyOf(e) === body);
      return `copies in timeline: ${copies.map((e) => `${e.getId()} status=${e.status}`).join(", ") || "none"}; pending: ${room.getPendingEvents().length}`;
    },
  );
}

// ------------------------------------------------------------- the story ---

const suffix = randomBytes(4).toString("hex");
const users = {
  alice: { username: `alice-${suffix}`, password: `alice password ${suffix}` },
  bob: { username: `bob-${suffix}`, password: `bob password ${suffix}` },
};
const ROOM_NAME = `JS SDK smoke ${suffix}`;
const BOB_NEW_NAME = `Bob Builder ${suffix}`;
const BURST = 25;

// Registers users[who]; on another server than baseUrl with { baseUrl }.
async function register(who, { baseUrl: url } = {}) {
  const { username, password } = users[who];
  const tmp = newClient(`${who}/register`, undefined, url ? { baseUrl: url } : {});
  // Element's registration form asks whether the name is free as you type.
  const free = await tmp.isUsernameAvailable(username);
  must(free === true, `GET /register/available said ${username} is not available`);
  // Element's registration: InteractiveAuth drives POST /register; the first
  // request has no auth and must come back 401 with the flows; the SDK then
  // completes m.login.dummy by itself.
  let stageFailed;
  const unexpectedStage = new Promise((_, reject) => {
    stageFailed = reject;
  });
  unexpectedStage.catch(() => {});
  const ia = new InteractiveAuth({
    matrixClient: tmp,
    doRequest: (auth) =>
      tmp.registerRequest({
        username,
        password,
        initial_device_display_name: "Haven smoke (registration)",
        auth: auth ?? undefined,
        inhibit_login: undefined,
      }),
    stateUpdated: (stage, status) => {
      stageFailed(
        new StepFailure(
          `registration asked for stage ${stage} ${JSON.stringify(status)}; with open registration Element expects a flow of only m.login.dummy`,
        ),
      );
    },
    requestEmailToken: async () => {
      throw new StepFailure("registration asked for an email address");
    },
  });
  const res = await Promise.race([ia.attemptAuth(), unexpectedStage]);
  must(res && typeof res.user_id === "string", `POST /register answered without user_id: ${JSON.stringify(res)}`);
  must(res.user_id.startsWith(`@${username}:`), `registered ${res.user_id}, asked for ${username}`);
  must(res.access_token && res.device_id, `POST /register gave no access_token/device_id: ${JSON.stringify(res)}`);
  const uia = httpLog.find((r) => r.label === `${who}/register` && r.status === 401 && r.uia);
  must(uia, "the first POST /register did not answer 401 with flows");
  tmp.stopClient();
  users[who].userId = res.user_id;
  out(`        registered ${res.user_id} (device ${res.device_id})`);
}

const story = async () => {
  await step("GET /_matrix/client/versions advertises a version the SDK supports", async () => {
    const tmp = newClient("versions");
    const v = await tmp.getVersions();
    const versions = v.versions || [];
    must(
      versions.some((x) => SUPPORTED_MATRIX_VERSIONS.includes(x)),
      `versions ${JSON.stringify(versions)} has none of ${SUPPORTED_MATRIX_VERSIONS.join(", ")}: Element says "Your server is unsupported"`,
    );
    out(`        versions: ${versions.join(", ")}`);
    out(`        unstable_features: ${Object.keys(v.unstable_features || {}).join(", ") || "(none)"}`);
  });

  await step("alice registers (InteractiveAuth, m.login.dummy)", () => register("alice"));
  await step("bob registers (InteractiveAuth, m.login.dummy)", () => register("bob"));

  let alice;
  let bob;
  await step("alice logs in as Element does (GET /login, then loginRequest with an m.id.user identifier)", async () => {
    const tmp = newClient("alice/login");
    const flows = await tmp.loginFlows();
    must(
      (flows.flows || []).some((f) => f.type === "m.login.password"),
      `GET /login offers no m.login.password: ${JSON.stringify(flows)}`,
    );
    const res = await tmp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: users.alice.username },
      password: users.alice.password,
      initial_device_display_name: "Haven smoke (alice)",
    });
    must(res.user_id === users.alice.userId, `login gave user_id ${res.user_id}, expected ${users.alice.userId}`);
    must(res.access_token && res.device_id, `login gave no access_token/device_id: ${JSON.stringify(res)}`);
    alice = newClient("alice", res);
    out(`        alice is on device ${res.device_id}`);
  });

  await step("bob logs in with loginWithPassword", async () => {
    const tmp = newClient("bob/login");
    const res = await tmp.loginWithPassword(users.bob.username, users.bob.password);
    must(res.user_id === users.bob.userId, `login gave user_id ${res.user_id}, expected ${users.bob.userId}`);
    must(res.access_token && res.device_id, `login gave no access_token/device_id: ${JSON.stringify(res)}`);
    bob = newClient("bob", res);
    out(`        bob is on device ${res.device_id}`);
  });
  const aliceId = users.alice.userId;
  const bobId = users.bob.userId;

  await step("both start their clients with Element's options and finish the first /sync", async () => {
    await Promise.all([startAndWaitForSync("alice", alice), startAndWaitForSync("bob", bob)]);
    for (const [label, client] of [
      ["alice", alice],
      ["bob", bob],
    ]) {
      must(client.pushRules && client.pushRules.global, `${label}'s push rules were not loaded from GET /pushrules/`);
      await waitUntil(
        `${label}'s start-up requests (versions, capabilities, pushrules, filter, sync) to succeed`,
        [],
        () =>
          answered(label, "GET", "/_matrix/client/versions") &&
          answered(label, "GET", "/capabilities") &&
          answered(label, "GET", "/pushrules/") &&
          answered(label, "POST", "/user/{userId}/filter") &&
          answered(label, "GET", "/sync"),
        () =>
          ["/_matrix/client/versions", "/capabilities", "/pushrules/", "/user/{userId}/filter", "/sync"]
            .filter((e) => !httpLog.some((r) => r.label === label && r.endpoint.endsWith(e) && r.status >= 200 && r.status < 300))
            .map((e) => `missing a 2xx ${e}`)
            .join(", "),
      );
    }
  });

  let roomId;
  await step("alice creates a private room (preset private_chat, unencrypted)", async () => {
    const res = await alice.createRoom({
      preset: "private_chat",
      visibility: "private",
      name: ROOM_NAME,
      topic: "matrix-js-sdk against Haven",
    });
    roomId = res.room_id;
    must(typeof roomId === "string" && roomId.startsWith("!"), `createRoom answered ${JSON.stringify(res)}`);
    // /sync may deliver the room while /createRoom is still writing its
    // events; wait for the last of them (the topic) and the name.
    const room = await waitUntil(
      "the new room to show up in alice's client, joined, with its name and topic",
      [
        [alice, ClientEvent.Room],
        [alice, RoomEvent.MyMembership],
        [alice, RoomEvent.Name],
        [alice, RoomEvent.Timeline],
      ],
      () => {
        const r = alice.getRoom(roomId);
        return r &&
          r.getMyMembership() === "join" &&
          r.name === ROOM_NAME &&
          r.currentState.getStateEvents("m.room.topic", "")
          ? r
          : null;
      },
      () => {
        const r = alice.getRoom(roomId);
        if (!r) return "alice's client does not know the room";
        return `membership ${r.getMyMembership()}, name "${r.name}", state types ${[...r.currentState.events.keys()].join(", ")}`;
      },
    );
    must(room.getJoinRule() === "invite", `private_chat should give join_rule invite, got ${room.getJoinRule()}`);
    must(
      room.getHistoryVisibility() === "shared",
      `private_chat should give history_visibility shared, got ${room.getHistoryVisibility()}`,
    );
    must(!room.hasEncryptionStateEvent(), "the room has m.room.encryption although none was asked for");
    out(`        room ${roomId}`);
  });

  await step("alice invites bob; bob's client sees the invite (Room and RoomMember.membership events)", async () => {
    const sawRoom = expectEvent("a Room event for the invited room in bob's client", bob, ClientEvent.Room, (room) => room.roomId === roomId);
    const sawInvite = expectEvent(
      "RoomMember.membership = invite for bob in bob's client",
      bob,
      RoomMemberEvent.Membership,
      (_ev, member) => member.roomId === roomId && member.userId === bobId && member.membership === "invite",
    );
    await alice.invite(roomId, bobId);
    await Promise.all([sawRoom, sawInvite]);
    const room = bob.getRoom(roomId);
    must(room && room.getMyMembership() === "invite", `bob's membership is ${room?.getMyMembership()}`);
    const inviter = room.getMember(bobId)?.events.member?.getSender();
    must(inviter === aliceId, `the invite seen by bob was sent by ${inviter}, expected ${aliceId}`);
    if (room.name !== ROOM_NAME) {
      note(`bob's invite shows the room as "${room.name}": invite_state has no m.room.name (the spec says servers should include it; Element shows this name in the invite)`);
    }
  });

  await step("bob joins; alice sees bob's membership become join", async () => {
    const aliceSees = expectEvent(
      "RoomMember.membership = join for bob in alice's client",
      alice,
      RoomMemberEvent.Membership,
      (_ev, member) => member.roomId === roomId && member.userId === bobId && member.membership === "join",
    );
    await bob.joinRoom(roomId);
    await aliceSees;
    await waitUntil(
      "bob's client to show the room as joined with its state",
      [
        [bob, RoomEvent.MyMembership],
        [bob, ClientEvent.Room],
      ],
      () => {
        const r = bob.getRoom(roomId);
        return r && r.getMyMembership() === "join" && r.name === ROOM_NAME && r.getMember(aliceId)?.membership === "join";
      },
      () => {
        const r = bob.getRoom(roomId);
        return `membership ${r?.getMyMembership()}, name "${r?.name}", alice ${r?.getMember(aliceId)?.membership}`;
      },
    );
  });

  async function sendAndSee(fromLabel, from, toLabel, to, body) {
    const fromId = from.getUserId();
    const seen = expectEvent(
      `"${body}" as a Room.timeline event in ${toLabel}'s client`,
      to,
      RoomEvent.Timeline,
      (ev, room, toStartOfTimeline) =>
        room?.roomId === roomId && !toStartOfTimeline && ev.getType() === "m.room.message" && bodyOf(ev) === body,
    );
    const res = await from.sendMessage(roomId, { msgtype: "m.text", body });
    must(typeof res.event_id === "string" && res.event_id.startsWith("$"), `send answered ${JSON.stringify(res)}`);
    const [ev] = await seen;
    must(ev.getId() === res.event_id, `${toLabel} saw event ${ev.getId()}, the send returned ${res.event_id}`);
    must(ev.getSender() === fromId, `${toLabel} saw sender ${ev.getSender()}, expected ${fromId}`);
    await ownEcho(fromLabel, from, roomId, res.event_id, body);
    return { eventId: res.event_id, event: ev };
  }

  await step("alice sends a message; bob sees it as a Room.timeline event", () =>
    sendAndSee("alice", alice, "bob", bob, `hello bob ${suffix}`),
  );
  await step("bob sends a message; alice sees it as a Room.timeline event", () =>
    sendAndSee("bob", bob, "alice", alice, `hello alice ${suffix}`),
  );

  await step("alice types; bob sees RoomMember.typing go on, then off", async () => {
    const on = expectEvent(
      "alice typing = true in bob's client",
      bob,
      RoomMemberEvent.Typing,
      (_ev, member) => member.roomId === roomId && member.userId === aliceId && member.typing === true,
    );
    await alice.sendTyping(roomId, true, 30000);
    await on;
    const off = expectEvent(
      "alice typing = false in bob's client",
      bob,
      RoomMemberEvent.Typing,
      (_ev, member) => member.roomId === roomId && member.userId === aliceId && member.typing === false,
    );
    await alice.sendTyping(roomId, false, 0);
    await off;
  }, { soft: true });

  let third;
  await step("bob sends a read receipt for alice's new message; alice sees it (Room.receipt)", async () => {
    third = await sendAndSee("alice", alice, "bob", bob, `read this, bob ${suffix}`);
    const aliceSees = expectEvent(
      "bob's m.read receipt in alice's client",
      alice,
      RoomEvent.Receipt,
      (ev, room) => room.roomId === roomId && Boolean(ev.getContent()?.[third.eventId]?.["m.read"]?.[bobId]),
    );
    await bob.sendReadReceipt(third.event);
    const [ev] = await aliceSees;
    const r = ev.getContent()[third.eventId]["m.read"][bobId];
    must(typeof r.ts === "number", `the receipt has no ts: ${JSON.stringify(r)}`);
    const upTo = alice.getRoom(roomId).getEventReadUpTo(bobId);
    must(upTo === third.eventId, `alice's client says bob has read up to ${upTo}, expected ${third.eventId}`);
  });

  await step("bob moves his read marker (POST /read_markers, as Element's timeline does); bob's client gets m.fully_read", async () => {
    const sees = expectEvent(
      "room account data m.fully_read in bob's client",
      bob,
      RoomEvent.AccountData,
      (ev, room) => room.roomId === roomId && ev.getType() === "m.fully_read" && ev.getContent()?.event_id === third.eventId,
    );
    await bob.setRoomReadMarkers(roomId, third.eventId, third.event);
    await sees;
  }, { soft: true });

  await step("bob changes his display name; alice sees it on the member in the room (RoomMember.name)", async () => {
    const aliceSees = expectEvent(
      `bob's member name "${BOB_NEW_NAME}" in alice's client`,
      alice,
      RoomMemberEvent.Name,
      (_ev, member) => member.roomId === roomId && member.userId === bobId && member.name === BOB_NEW_NAME,
    );
    await bob.setDisplayName(BOB_NEW_NAME);
    await aliceSees;
    const profile = await alice.getProfileInfo(bobId);
    must(profile.displayname === BOB_NEW_NAME, `GET /profile for bob says ${JSON.stringify(profile)}`);
    await waitUntil(
      "bob's own client to show his new name in the room",
      [[bob, RoomMemberEvent.Name]],
      () => bob.getRoom(roomId)?.getMember(bobId)?.name === BOB_NEW_NAME,
    );
  });

  const burstBodies = Array.from({ length: BURST }, (_, i) => `burst ${String(i + 1).padStart(2, "0")} ${suffix}`);
  await step(`alice sends ${BURST} messages at once; bob gets all of them, in order, once`, async () => {
    const last = burstBodies[burstBodies.length - 1];
    const seen = expectEvent(`"${last}" in bob's client`, bob, RoomEvent.Timeline, (ev, room) => room?.roomId === roomId && bodyOf(ev) === last);
    // The SDK queues a room's messages and sends them one after another.
    const results = await Promise.all(burstBodies.map((body) => alice.sendMessage(roomId, { msgtype: "m.text", body })));
    await seen;
    const got = liveEvents(bob.getRoom(roomId)).map(bodyOf).filter((b) => burstBodies.includes(b));
    must(
      JSON.stringify(got) === JSON.stringify(burstBodies),
      `bob's timeline has the burst as ${JSON.stringify(got)}`,
    );
    await ownEcho("alice", alice, roomId, results[results.length - 1].event_id, last);
    const aliceRoom = alice.getRoom(roomId);
    const mine = liveEvents(aliceRoom).map(bodyOf).filter((b) => burstBodies.includes(b));
    must(JSON.stringify(mine) === JSON.stringify(burstBodies), `alice's own timeline has the burst as ${JSON.stringify(mine)}`);
    // The spec says sending an event updates the sender's read receipt, so
    // bob's earlier message should no longer count for alice. Synapse does not
    // do this either (synapse#14837, MSC4005 would drop the rule) and Element
    // sends receipts as the user reads, so this is a note, not a failure.
    const aliceCount = aliceRoom.getUnreadNotificationCount("total");
    if (aliceCount !== 0) {
      note(
        `alice's notification_count is ${aliceCount} after she sent ${BURST + 1} messages since bob's last one ` +
          `(spec, Receiving notifications: sending an event marks earlier notifications read; Synapse behaves the same)`,
      );
    }
  });

  const counts = (room) =>
    `notification_count ${room.getUnreadNotificationCount("total")}, highlight_count ${room.getUnreadNotificationCount("highlight")}`;

  await step(
    "bob's unread count shows alice's burst; his read receipt (thread_id main, as Element sends it) clears it",
    async () => {
      const room = bob.getRoom(roomId);
      // bob read up to the third message; since then: his own name change
      // (never counted) and alice's burst, each notifying under the default
      // .m.rule.room_one_to_one push rule.
      await waitUntil(
        `bob's notification count for the room to be ${BURST}`,
        [[bob, RoomEvent.UnreadNotifications]],
        () => room.getUnreadNotificationCount("total") === BURST,
        () => counts(room),
      );
      must(room.getUnreadNotificationCount("highlight") === 0, `no burst message mentions bob, yet ${counts(room)}`);
      const last = liveEvents(room).filter((e) => bodyOf(e) === burstBodies[burstBodies.length - 1]);
      must(last.length === 1, `bob's timeline has ${last.length} copies of the last burst message`);
      // With threadSupport on (as in Element) the SDK sends {"thread_id": "main"}.
      await bob.sendReadReceipt(last[0]);
      await waitUntil(
        "bob's notification count to drop to 0 after his read receipt",
        [[bob, RoomEvent.UnreadNotifications]],
        () => room.getUnreadNotificationCount("total") === 0,
        () => counts(room),
      );
    },
    { soft: true },
  );

  // Everything the room should hold, oldest first.
  const expectedBodies = [`hello bob ${suffix}`, `hello alice ${suffix}`, `read this, bob ${suffix}`, ...burstBodies];

  function checkWholeHistory(label, events) {
    must(events.length > 0, `${label} has no events`);
    must(
      events[0].getType() === "m.room.create",
      `${label}: the oldest event is ${events[0].getType()}, expected m.room.create`,
    );
    const ids = events.map((e) => e.getId());
    const dups = ids.filter((id, i) => ids.indexOf(id) !== i);
    must(dups.length === 0, `${label}: duplicate events ${[...new Set(dups)].join(", ")}`);
    const bodies = events.filter((e) => e.getType() === "m.room.message").map(bodyOf);
    must(
      JSON.stringify(bodies) === JSON.stringify(expectedBodies),
      `${label}: messages oldest first are ${JSON.stringify(bodies)}, expected ${JSON.stringify(expectedBodies)}`,
    );
    const invite = events.findIndex(
      (e) => e.getType() === "m.room.member" && e.getStateKey() === bobId && e.getContent().membership === "invite",
    );
    must(invite > 0, `${label}: bob's invite is not in the history`);
  }

  await step("alice on a new device (like a reload): limited first /sync, members loaded lazily, scrollback to the room's creation", async () => {
    const tmp = newClient("alice2/login");
    const res = await tmp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: users.alice.username },
      password: users.alice.password,
      initial_device_display_name: "Haven smoke (alice, second device)",
    });
    const alice2 = newClient("alice2", res);
    await startAndWaitForSync("alice2", alice2);
    const room = await waitUntil("the room in alice2's client", [[alice2, ClientEvent.Room]], () => alice2.getRoom(roomId));
    must(room.getMyMembership() === "join", `alice2's membership is ${room.getMyMembership()}`);
    must(room.name === ROOM_NAME, `alice2's client names the room "${room.name}"`);
    const initial = liveEvents(room).length;
    must(initial <= 20, `the first /sync brought ${initial} timeline events, more than the filter's limit of 20`);
    must(room.oldState.paginationToken, "the first /sync gave no prev_batch although the room has more than 20 events");
    out(`        first /sync: ${initial} events, prev_batch present`);
    must(
      room.getJoinedMemberCount() === 2,
      `the room summary says ${room.getJoinedMemberCount()} joined members, expected 2 (m.joined_member_count)`,
    );
    await room.loadMembersIfNeeded();
    const members = room.getJoinedMembers().map((m) => `${m.userId}=${m.name}`).sort();
    must(
      room.getMember(aliceId)?.membership === "join" && room.getMember(bobId)?.membership === "join",
      `after GET /members the joined members are ${members.join(", ")}`,
    );
    must(room.getMember(bobId).name === BOB_NEW_NAME, `bob's name in alice2's room is "${room.getMember(bobId).name}"`);
    let calls = 0;
    while (!liveEvents(room).some((e) => e.getType() === "m.room.create")) {
      must(room.oldState.paginationToken !== null, `/messages said there is no more history, but m.room.create never came (${liveEvents(room).length} events loaded)`);
      must(++calls <= 20, "20 scrollbacks did not reach m.room.create");
      const before = liveEvents(room).length;
      await alice2.scrollback(room, 30);
      out(`        scrollback #${calls}: ${before} → ${liveEvents(room).length} events`);
    }
    checkWholeHistory("alice2's timeline after scrollback", liveEvents(room));
    await alice2.scrollback(room, 30);
    must(room.oldState.paginationToken === null, "paging back past m.room.create still returns a pagination token");
    must(liveEvents(room)[0].getType() === "m.room.create", "paging back past m.room.create added events before it");
  });

  await step("bob on a new device pages back with a TimelineWindow (Element's timeline view) to the room's creation", async () => {
    const tmp = newClient("bob2/login");
    const res = await tmp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: users.bob.username },
      password: users.bob.password,
      initial_device_display_name: "Haven smoke (bob, second device)",
    });
    const bob2 = newClient("bob2", res);
    await startAndWaitForSync("bob2", bob2);
    const room = await waitUntil("the room in bob2's client", [[bob2, ClientEvent.Room]], () => bob2.getRoom(roomId));
    const win = new TimelineWindow(bob2, room.getUnfilteredTimelineSet(), { windowLimit: 1000 });
    await win.load(undefined, 20);
    let calls = 0;
    while (win.canPaginate("b")) {
      must(++calls <= 20, "20 paginations did not reach the start of the room");
      await win.paginate("b", 20);
    }
    out(`        ${calls} paginations, ${win.getEvents().length} events in the window`);
    checkWholeHistory("bob2's TimelineWindow", win.getEvents());
  });
};

// ------------------------------------------------------------- control ---

// Asks the process running this script (sytest/jssdk_test.go) to act on a
// server — "stop B", "start B" — and resolves once it says the action is
// done: the request goes out on stdout as "@@control <request>", the answer
// comes back on stdin as "ok <request>" (or "failed <request>: why").
// { down: url } marks that server as stopped on purpose from before the
// request, { up: url } as back once it is done (requests failing in
// between are expected, not problems).
let controlLines;
async function control(request, { down, up } = {}) {
  must(process.env.SMOKE_CONTROL === "1", `"${request}" needs a controller (SMOKE_CONTROL=1, as sytest/jssdk_test.go runs it)`);
  if (down) downHosts.add(new URL(down).host);
  if (!controlLines) {
    const { createInterface } = await import("node:readline");
    controlLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  }
  out(`@@control ${request}`);
  const { value, done } = await controlLines.next();
  must(!done, `no answer to "${request}": the controller closed stdin`);
  must(value.trim() === `ok ${request}`, `the controller answered "${value.trim()}" to "${request}"`);
  if (up) downHosts.delete(new URL(up).host);
}

// ---------------------------------------------------------------- report ---

function classify(r) {
  if (r.status === "aborted" || r.status === "pending") return "ok";
  if (r.outage && (typeof r.status !== "number" || r.status >= 499)) return "expected"; // its server was stopped on purpose
  if (typeof r.status !== "number") return "problem";
  if (r.problem) return "problem";
  if (r.status < 400) return "ok";
  if (r.status === 401 && r.uia) return "expected"; // user-interactive auth asking for a stage
  const lookups = [
    /\/account_data\/[^/]+$/,
    /\/room_keys\/version$/,
    /\/room_keys\/keys\/\{roomId\}\/[^/]+$/, // a session not in the backup (yet)
    /\/profile\/\{userId\}(\/(displayname|avatar_url))?$/,
    /\/rooms\/\{roomId\}\/state\/[^/]+(\/.*)?$/,
    /\/rooms\/\{roomId\}\/(event|context)\/\{eventId\}$/,
    /\/directory\/room\/\{roomAlias\}$/,
    /\/pushrules\/global\/[^/]+\/[^/]+$/,
  ];
  if (r.status === 404 && r.errcode === "M_NOT_FOUND" && r.method === "GET" && lookups.some((re) => re.test(r.endpoint))) {
    return "expected"; // "this does not exist (yet)", the spec's answer
  }
  if (r.status === 404 && /\/unstable\//.test(r.endpoint)) return "unstable";
  return "problem";
}

function printReport(failed, stopped) {
  out("");
  out(`HTTP requests made by the SDK (${httpLog.length}; "label/cors" lines are the browser-style preflights):`);
  for (const r of httpLog) {
    const extra = [
      r.errcode,
      r.problem,
      typeof r.status === "number" && r.status >= 400 && !r.errcode && r.body !== undefined ? `body ${JSON.stringify(r.body)}` : "",
    ]
      .filter(Boolean)
      .join(" ");
    out(
      `  #${String(r.n).padStart(3, "0")} ${r.at} ${r.label.padEnd(16)} ${r.method.padEnd(7)} ${r.path} → ${r.status}` +
        (r.ms !== undefined ? ` (${r.ms} ms)` : "") +
        (extra ? `  ${extra}` : ""),
    );
  }

  const byEndpoint = new Map();
  for (const r of httpLog) {
    const key = `${r.method} ${r.endpoint}`;
    const e = byEndpoint.get(key) || new Map();
    e.set(String(r.status), (e.get(String(r.status)) || 0) + 1);
    byEndpoint.set(key, e);
  }
  out("");
  out("Endpoints used, with the statuses they answered:");
  for (const [key, statuses] of [...byEndpoint].sort()) {
    out(`  ${key}  ${[...statuses].map(([s, n]) => `${s}×${n}`).join(" ")}`);
  }

  const expected = httpLog.filter((r) => classify(r) === "expected");
  const unstable = httpLog.filter((r) => classify(r) === "unstable");
  const problems = httpLog.filter((r) => classify(r) === "problem");
  if (expected.length) {
    out("");
    out("Error answers that are the right answer (UIA 401 with flows; 404 M_NOT_FOUND for something not there; a server stopped on purpose):");
    for (const r of expected) {
      out(`  #${String(r.n).padStart(3, "0")} ${r.method} ${r.endpoint} → ${r.status} ${r.errcode || ""}${r.outage ? " (its server was stopped on purpose)" : ""}`);
    }
  }
  if (unstable.length) {
    out("");
    out("404 from unstable (MSC) endpoints the SDK probes — fine while the feature is not advertised:");
    for (const r of unstable) out(`  #${String(r.n).padStart(3, "0")} ${r.method} ${r.endpoint} → ${r.status} ${r.errcode || ""}`);
  }
  const serverErrors = problems.filter((r) => typeof r.status === "number" && r.status >= 500);
  const notFound = problems.filter((r) => r.status === 404 || r.status === 405);
  if (problems.length || corsProblems.length) {
    out("");
    out("PROBLEMS:");
    for (const r of serverErrors) out(`  5xx: #${r.n} ${r.method} ${r.path} → ${r.status} ${r.body ?? ""}`);
    for (const r of notFound) {
      out(`  ${r.status} of an endpoint Element needs: #${r.n} ${r.method} ${r.path} → ${r.errcode || ""} ${r.body ?? ""}`);
    }
    for (const r of problems.filter((x) => !serverErrors.includes(x) && !notFound.includes(x) && !x.problem)) {
      out(`  unexpected answer: #${r.n} ${r.method} ${r.path} → ${r.status} ${r.body ?? ""}`);
    }
    for (const c of corsProblems) out(`  CORS: ${c}`);
  }
  if (unhandled.length) {
    out("");
    out("Unhandled promise rejections inside the SDK:");
    for (const u of unhandled) out(`  ${u}`);
  }
  if (notes.length) {
    out("");
    out("Notes:");
    for (const n of notes) out(`  ${n}`);
  }
  if (failed) {
    out("");
    out("Sync states per client:");
    for (const [label, states] of syncStates) {
      const shown = states.slice(-6).map((x) => `${x.at.trim()} ${x.state}${x.error ? ` (${x.error})` : ""}`);
      if (states.length > 6) shown.unshift(`… ${states.length - 6} earlier`);
      out(`  ${label}: ${shown.join(" → ") || "never synced"}`);
    }
  }
  if (stopped) {
    out("");
    out(`Last ${sdkLog.length} lines of the SDK's own log:`);
    for (const l of sdkLog) out("  " + l);
  }
  return { problems: problems.length + corsProblems.length };
}

// The scenario: the default story above, or another one from its own file
// that gets this file's helpers (node smoke.mjs URL e2ee).
const scenario = process.argv[3] || process.env.SMOKE_SCENARIO || "smoke";
let stopped = false;
try {
  if (scenario === "smoke") {
    await story();
  } else if (scenario === "e2ee") {
    const { e2eeStory } = await import("./e2ee.mjs");
    await e2eeStory({
      sdk, baseUrl, users, suffix, STEP_MS, httpLog,
      out, note, step, must, newClient, startAndWaitForSync, register, waitUntil, expectEvent, liveEvents, bodyOf,
    });
  } else if (scenario === "sliding") {
    const { slidingStory } = await import("./sliding.mjs");
    await slidingStory({
      sdk, baseUrl, users, suffix, STEP_MS, httpLog,
      out, note, step, must, newClient, startAndWaitForSync, register, waitUntil, expectEvent, liveEvents, bodyOf,
    });
  } else if (scenario === "e2ee-federation") {
    if (!baseUrlB) {
      out("e2ee-federation needs a second homeserver URL: node smoke.mjs URL_A e2ee-federation URL_B");
      process.exit(2);
    }
    const { e2eeFederationStory } = await import("./e2ee-federation.mjs");
    await e2eeFederationStory({
      sdk, baseUrl, baseUrlB, users, suffix, STEP_MS, httpLog,
      out, note, step, must, newClient, startAndWaitForSync, register, waitUntil, expectEvent, liveEvents, bodyOf, control,
    });
  } else {
    out(`unknown scenario ${scenario}: smoke, e2ee, sliding or e2ee-federation`);
    process.exit(2);
  }
} catch {
  stopped = true; // recorded in steps by step()
}
const failed = steps.filter((x) => !x.ok);

for (const client of clients.values()) {
  try {
    client.stopClient();
  } catch {
    // stopping is best effort
  }
}
// Let aborted long-polls settle into the log.
await new Promise((r) => setTimeout(r, 200));

const { problems } = printReport(failed.length > 0, stopped);
out("");
for (const f of failed) {
  const e = f.error;
  out(`FAILED at step ${f.no}. ${f.name}`);
  out(`  ${describeError(e)}`);
  if (e?.data && Object.keys(e.data).length) out(`  server answered: ${JSON.stringify(e.data)}`);
  if (!(e instanceof StepFailure) && e?.stack && !/^Error: timed out/.test(String(e.stack))) {
    out(e.stack.split("\n").slice(1, 8).map((l) => "  " + l.trim()).join("\n"));
  }
}
if (problems) {
  out(`FAILED: ${problems} request(s) answered what a working server should not (see PROBLEMS above)`);
}
const passed = steps.filter((x) => x.ok).length;
out(
  `result: ${passed} of ${steps.length} steps passed` +
    (stopped ? `; stopped after step ${stepNo}, later steps did not run` : ""),
);
process.exit(failed.length || problems ? 1 : 0);
