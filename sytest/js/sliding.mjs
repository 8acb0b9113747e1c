// Sliding sync (MSC4186, simplified sliding sync) with a real client, run
// by `node smoke.mjs URL sliding` with the harness of smoke.mjs (its
// recording, CORS-checking fetch and its report).
//
// Alice and Bob log in with a password and start matrix-js-sdk with its
// SlidingSync (POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync)
// instead of /sync, with the Rust crypto fed by the e2ee and to_device
// extensions. Alice creates an encrypted room and invites Bob; Bob sees the
// invite in his list (count, name), joins, and they exchange messages that
// each decrypts. Bob opens the room (a room subscription). Alice renames
// the room and Bob's client shows the new name; a second device of Bob,
// also on sliding sync, reaches Alice's client through the e2ee
// extension's device lists and decrypts her next message; his typing and
// read receipt reach Alice through their extensions.
// No client ever calls GET /sync.

import { cryptoKit } from "./crypto-kit.mjs";

const SLIDING_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

export async function slidingStory(h) {
  const { sdk, baseUrl, users, out, step, must, register, newClient, waitUntil, liveEvents, httpLog } = h;
  const { ClientEvent, RoomEvent, RoomMemberEvent, PendingEventOrdering } = sdk;
  const { SlidingSync, SlidingSyncEvent, SlidingSyncState } = await import("matrix-js-sdk/lib/sliding-sync.js");
  const { decrypted, eventually } = cryptoKit(h);

  const ROOM_NAME = `Sliding E2EE ${h.suffix}`;
  const SECRET_1 = `a sliding secret ${h.suffix}`;
  const SECRET_2 = `bob's sliding answer ${h.suffix}`;
  const SECRET_3 = `for both of bob's devices ${h.suffix}`;
  const NEW_NAME = `Sliding E2EE renamed ${h.suffix}`;

  // What Element Web's sliding sync asked for its room list: a window of
  // the newest rooms with the state the list shows, a short timeline.
  const LIST_STATE = [
    ["m.room.create", ""],
    ["m.room.name", ""],
    ["m.room.avatar", ""],
    ["m.room.encryption", ""],
    ["m.room.join_rules", ""],
    ["m.room.power_levels", ""],
    ["m.room.member", "$ME"],
    ["m.room.member", "$LAZY"],
  ];
  const lists = () =>
    new Map([
      ["all", { ranges: [[0, 19]], timeline_limit: 10, required_state: LIST_STATE, filters: {} }],
      ["invites", { ranges: [[0, 19]], timeline_limit: 1, required_state: LIST_STATE, filters: { is_invite: true } }],
    ]);
  const SUBSCRIPTION = { timeline_limit: 30, required_state: [["*", "*"]] };

  const sliding = new Map(); // label -> SlidingSync
  const responses = new Map(); // label -> the last raw response

  // Logs in with a password, starts the Rust crypto, then the client with
  // sliding sync only; resolves once the first sliding sync answered.
  async function loginSliding(who, label) {
    const tmp = newClient(`${label}/login`);
    const res = await tmp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: users[who].username },
      password: users[who].password,
      initial_device_display_name: `Haven sliding (${label})`,
    });
    must(res.access_token && res.device_id, `login gave no access_token/device_id: ${JSON.stringify(res)}`);
    const client = newClient(label, res);
    await client.initRustCrypto({ useIndexedDB: false });
    const ss = new SlidingSync(baseUrl, lists(), SUBSCRIPTION, client, 10000);
    ss.on(SlidingSyncEvent.Lifecycle, (state, resp) => {
      if (state === SlidingSyncState.Complete && resp) responses.set(label, resp);
    });
    sliding.set(label, ss);
    const ready = waitUntil(
      `${label}'s first sliding sync (sync state PREPARED)`,
      [[client, ClientEvent.Sync]],
      () => ["PREPARED", "SYNCING"].includes(client.getSyncState()),
    );
    await client.startClient({
      initialSyncLimit: 20,
      lazyLoadMembers: true,
      pendingEventOrdering: PendingEventOrdering.Detached,
      slidingSync: ss,
    });
    await ready;
    out(`        ${label} is ${res.user_id} on device ${res.device_id}`);
    return client;
  }

  // How many rooms the server counts in the client's list.
  const count = (label, list) => sliding.get(label).getListData(list)?.joinedCount ?? 0;

  await step("alice registers", () => register("alice"));
  await step("bob registers", () => register("bob"));

  let alice;
  let bob;
  await step("alice logs in (password) and starts with sliding sync and Rust crypto", async () => {
    alice = await loginSliding("alice", "alice");
    const own = await alice.getCrypto().getUserDeviceInfo([alice.getUserId()]);
    must(own.get(alice.getUserId())?.has(alice.getDeviceId()), "alice's own device is not in /keys/query");
  });
  await step("bob logs in (password) and starts with sliding sync and Rust crypto", async () => {
    bob = await loginSliding("bob", "bob");
    must(count("bob", "all") === 0, `bob's list counts ${count("bob", "all")} rooms before he has any`);
  });

  let roomId;
  await step("alice creates an encrypted room and invites bob; it is in her list", async () => {
    const res = await alice.createRoom({
      preset: "private_chat",
      name: ROOM_NAME,
      invite: [bob.getUserId()],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    roomId = res.room_id;
    await waitUntil(
      "the room in alice's client, named, joined, counted in her list",
      [[alice, ClientEvent.Room], [alice, RoomEvent.Name], [alice, RoomEvent.Timeline], [alice, ClientEvent.Sync]],
      () => alice.getRoom(roomId)?.name === ROOM_NAME && alice.getRoom(roomId).getMyMembership() === "join" && count("alice", "all") === 1,
      () => `room ${alice.getRoom(roomId) ? `"${alice.getRoom(roomId).name}" ${alice.getRoom(roomId).getMyMembership()}` : "absent"}, list count ${count("alice", "all")}`,
    );
    // m.room.encryption in required_state reaches the crypto just after
    // the room model (onCryptoEvent).
    await eventually("alice's crypto to see the room as encrypted", () => alice.getCrypto().isEncryptionEnabledInRoom(roomId));
  });

  await step("bob sees the invite in his sliding sync lists (invite_state, name, counts)", async () => {
    const room = await waitUntil(
      "the invite in bob's client",
      [[bob, ClientEvent.Room], [bob, RoomEvent.MyMembership], [bob, ClientEvent.Sync]],
      () => {
        const r = bob.getRoom(roomId);
        return r && r.getMyMembership() === "invite" && count("bob", "invites") === 1 ? r : null;
      },
      () => `room ${bob.getRoom(roomId)?.getMyMembership() ?? "absent"}, invites count ${count("bob", "invites")}, all count ${count("bob", "all")}`,
    );
    must(room.name === ROOM_NAME, `bob's client names the invite "${room.name}", not "${ROOM_NAME}"`);
    must(count("bob", "all") === 1, `bob's list "all" counts ${count("bob", "all")} rooms with one invite`);
    const inviter = room.getMember(bob.getUserId())?.events?.member?.getSender();
    must(inviter === alice.getUserId(), `bob's invite is from ${inviter}, not alice`);
  });

  await step("bob joins; both see him joined, the room once in bob's lists", async () => {
    await bob.joinRoom(roomId);
    await waitUntil(
      "bob's client to show the room joined, named, encrypted, no longer an invite",
      [[bob, RoomEvent.MyMembership], [bob, RoomEvent.Timeline], [bob, ClientEvent.Sync]],
      () => {
        const r = bob.getRoom(roomId);
        return r?.getMyMembership() === "join" && r.name === ROOM_NAME && r.hasEncryptionStateEvent() && count("bob", "invites") === 0 && count("bob", "all") === 1;
      },
      () => {
        const r = bob.getRoom(roomId);
        return `membership ${r?.getMyMembership()}, name "${r?.name}", encrypted ${r?.hasEncryptionStateEvent()}, invites ${count("bob", "invites")}, all ${count("bob", "all")}`;
      },
    );
    await waitUntil(
      "alice to see bob joined",
      [[alice, RoomEvent.Timeline], [alice, ClientEvent.Sync]],
      () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join",
    );
    await eventually("bob's crypto to see the room as encrypted", () => bob.getCrypto().isEncryptionEnabledInRoom(roomId));
  });

  await step("alice sends an encrypted message (keys/claim, to-device through the extension); bob decrypts it", async () => {
    const sent = await alice.sendTextMessage(roomId, SECRET_1);
    must(sent.event_id, "no event_id");
    const ev = await decrypted("bob", bob, roomId, SECRET_1);
    must(ev.getWireType() === "m.room.encrypted", `bob got a ${ev.getWireType()}, not m.room.encrypted`);
  });

  await step("bob answers; alice decrypts it", async () => {
    await bob.sendTextMessage(roomId, SECRET_2);
    const ev = await decrypted("alice", alice, roomId, SECRET_2);
    must(ev.getSender() === bob.getUserId(), `the answer is from ${ev.getSender()}`);
  });

  await step("each sees the conversation once, in order; bob's last answer counts one room in his list", async () => {
    for (const [label, client] of [["alice", alice], ["bob", bob]]) {
      // The sender's own message comes back through sliding sync (its
      // remote echo) a little after the other side decrypted it.
      const bodies = () =>
        JSON.stringify(
          liveEvents(client.getRoom(roomId))
            .filter((e) => e.isEncrypted())
            .map((e) => e.getContent()?.body),
        );
      await waitUntil(
        `${label}'s timeline to hold both messages once, in order`,
        [[client, RoomEvent.Timeline], [client, RoomEvent.LocalEchoUpdated], [client, ClientEvent.Sync]],
        () => bodies() === JSON.stringify([SECRET_1, SECRET_2]),
        () => `${label}'s timeline has the messages ${bodies()}`,
      );
    }
    const resp = responses.get("bob");
    must(resp && typeof resp.pos === "string", "no sliding sync response recorded for bob");
    must(resp.lists?.all?.count === 1, `bob's last response counts ${JSON.stringify(resp.lists?.all)} in "all"`);
  });

  await step("bob opens the room (a room subscription: all its state, a longer timeline); no event twice", async () => {
    must(!bob.getRoom(roomId).currentState.getStateEvents("m.room.history_visibility", ""), "bob's list already sent m.room.history_visibility");
    sliding.get("bob").modifyRoomSubscriptions(new Set([roomId]));
    await waitUntil(
      "m.room.history_visibility (not in the lists' required_state) in bob's client",
      [[bob, ClientEvent.Sync], [bob, RoomEvent.Timeline]],
      () => bob.getRoom(roomId)?.currentState.getStateEvents("m.room.history_visibility", ""),
    );
    const ids = liveEvents(bob.getRoom(roomId)).map((e) => e.getId());
    must(new Set(ids).size === ids.length, `bob's timeline has an event twice: ${ids.join(", ")}`);
    const bodies = liveEvents(bob.getRoom(roomId)).filter((e) => e.isEncrypted()).map((e) => e.getContent()?.body);
    must(JSON.stringify(bodies) === JSON.stringify([SECRET_1, SECRET_2]), `bob's timeline has the messages ${JSON.stringify(bodies)}`);
  });

  await step("alice renames the room; bob's client shows the new name (required_state change)", async () => {
    await alice.setRoomName(roomId, NEW_NAME);
    await waitUntil(
      "the new name in bob's client",
      [[bob, RoomEvent.Name], [bob, ClientEvent.Sync]],
      () => bob.getRoom(roomId)?.name === NEW_NAME,
      () => `bob's client names it "${bob.getRoom(roomId)?.name}"`,
    );
  });

  let bob2;
  await step("bob logs in on a second device with sliding sync; alice learns of it (e2ee device_lists) and bob2 decrypts her next message", async () => {
    bob2 = await loginSliding("bob", "bob2");
    await waitUntil(
      "the room in bob2's client, joined, with its name",
      [[bob2, ClientEvent.Room], [bob2, RoomEvent.Name], [bob2, ClientEvent.Sync]],
      () => bob2.getRoom(roomId)?.getMyMembership() === "join" && bob2.getRoom(roomId).name === NEW_NAME,
      () => `room ${bob2.getRoom(roomId) ? `"${bob2.getRoom(roomId).name}" ${bob2.getRoom(roomId).getMyMembership()}` : "absent"}`,
    );
    await eventually("alice's client to know bob's second device", async () => {
      const devices = await alice.getCrypto().getUserDeviceInfo([bob.getUserId()]);
      return devices.get(bob.getUserId())?.has(bob2.getDeviceId());
    });
    await alice.sendTextMessage(roomId, SECRET_3);
    await decrypted("bob2", bob2, roomId, SECRET_3);
    await decrypted("bob", bob, roomId, SECRET_3);
  });

  await step("bob types and reads the last message; alice's client shows both (typing and receipts extensions)", async () => {
    const room = bob.getRoom(roomId);
    const last = liveEvents(room).at(-1);
    await bob.sendTyping(roomId, true, 20000);
    await waitUntil(
      "bob typing in alice's client",
      [[alice, RoomMemberEvent.Typing], [alice, ClientEvent.Sync]],
      () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.typing,
    );
    await bob.sendReadReceipt(last);
    await waitUntil(
      "bob's read receipt in alice's client",
      [[alice, RoomEvent.Receipt], [alice, ClientEvent.Sync]],
      () => alice.getRoom(roomId)?.getEventReadUpTo(bob.getUserId()) === last.getId(),
      () => `alice's client has bob read up to ${alice.getRoom(roomId)?.getEventReadUpTo(bob.getUserId())}, not ${last.getId()}`,
    );
    await bob.sendTyping(roomId, false);
    await waitUntil(
      "bob no longer typing in alice's client",
      [[alice, RoomMemberEvent.Typing], [alice, ClientEvent.Sync]],
      () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.typing === false,
    );
  });

  await step("no client ever used GET /sync; every sliding sync request answered 2xx", async () => {
    const v2 = httpLog.filter((r) => /\/_matrix\/client\/(v3|r0)\/sync$/.test(r.endpoint) && !r.label.endsWith("/cors"));
    must(v2.length === 0, `${v2.length} GET /sync requests: ${v2.map((r) => r.label).join(", ")}`);
    const ss = httpLog.filter((r) => r.endpoint === SLIDING_PATH && r.method === "POST");
    must(ss.length >= 4, `only ${ss.length} sliding sync requests`);
    const bad = ss.filter((r) => typeof r.status === "number" && r.status >= 300);
    must(bad.length === 0, `sliding sync answers: ${bad.map((r) => `${r.status} ${r.errcode ?? ""}`).join(", ")}`);
    out(`        ${ss.length} sliding sync requests`);
  });
}
