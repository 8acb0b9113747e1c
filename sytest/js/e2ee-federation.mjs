// End-to-end encryption across two federating servers, run by
// `node smoke.mjs URL_A e2ee-federation URL_B` with the harness of smoke.mjs
// (its recording, CORS-checking fetch and its report).
//
// Alice is a user of site A, Bob of site B, both on matrix-js-sdk's Rust
// crypto (what Element Web runs). Bob sets up cross-signing, secret storage
// and a key backup, as Element's "set up secure backup" does. Alice creates
// an encrypted room on A and invites him; he joins from B, and each
// decrypts the other's messages: the device and cross-signing keys, the
// one-time keys and the room keys (to-device) all cross the servers. Site B
// is then stopped in the middle of the conversation while Alice goes on
// writing, and started again (asked of the test through control): nothing
// is lost, Bob gets and decrypts every message. A new device of Bob logs in
// on B, verifies itself with cross-signing from secret storage (Alice's
// client on A sees it signed by Bob), decrypts Alice's next message, and
// restores the room's history from the key backup.
//
// Each wait that nothing later depends on is a soft step: when it fails the
// story goes on, so one run tells every part that does not work (the run
// fails all the same).

import { cryptoKit } from "./crypto-kit.mjs";

export async function e2eeFederationStory(h) {
  const { sdk, baseUrl, baseUrlB, out, step, must, register, waitUntil, liveEvents, control } = h;
  const { ClientEvent, RoomEvent } = sdk;
  const { login, uiaPassword, eventually, decrypted } = cryptoKit(h);

  const SECRET_1 = `alice on A writes ${h.suffix}`;
  const SECRET_2 = `bob on B answers ${h.suffix}`;
  const WHILE_DOWN = [0, 1, 2].map((i) => `written while B was down ${i} ${h.suffix}`);
  const AFTER = `bob is back ${h.suffix}`;
  const FOR_BOB2 = `alice writes to bob's new device ${h.suffix}`;
  const hostOf = (url) => new URL(url).host; // the client API's address, for the step names

  // Waits until the client has the event (by ID), as it came over the
  // wire: encrypted.
  function arrived(label, client, roomId, eventId) {
    return waitUntil(
      `${label} to get event ${eventId}`,
      [[client, RoomEvent.Timeline]],
      () => {
        const room = client.getRoom(roomId);
        return room && liveEvents(room).find((e) => e.getId() === eventId);
      },
      () => `sync state ${client.getSyncState()}`,
    ).then((ev) => {
      must(ev.getWireType() === "m.room.encrypted", `${label} got a ${ev.getWireType()}, not m.room.encrypted`);
      return ev;
    });
  }

  await step(`alice registers on site A (${hostOf(baseUrl)})`, () => register("alice"));
  await step(`bob registers on site B (${hostOf(baseUrlB)})`, () => register("bob", { baseUrl: baseUrlB }));

  let alice;
  let bob;
  await step("alice logs in on A with Rust crypto", async () => {
    alice = await login("alice", "alice");
  });
  await step("bob logs in on B with Rust crypto", async () => {
    bob = await login("bob", "bob", { baseUrl: baseUrlB });
    must(bob.getDomain() !== alice.getDomain(), `bob (${bob.getUserId()}) and alice (${alice.getUserId()}) are on the same server`);
  });

  await step("bob bootstraps cross-signing on B (keys/device_signing/upload with UIA)", async () => {
    const crypto = bob.getCrypto();
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaPassword("bob") });
    must(await crypto.isCrossSigningReady(), "cross-signing is not ready after bootstrapCrossSigning");
    await eventually("bob's device to be signed by his self-signing key", async () => {
      const trust = await crypto.getDeviceVerificationStatus(bob.getUserId(), bob.getDeviceId());
      return trust?.crossSigningVerified;
    });
  });

  let backupVersion;
  await step("bob sets up secret storage and a new key backup on B", async () => {
    const crypto = bob.getCrypto();
    await crypto.bootstrapSecretStorage({
      createSecretStorageKey: () => crypto.createRecoveryKeyFromPassphrase(),
      setupNewKeyBackup: true,
    });
    must(await crypto.isSecretStorageReady(), "secret storage is not ready");
    const info = await crypto.getKeyBackupInfo();
    must(info && info.version, `no key backup on the server: ${JSON.stringify(info)}`);
    backupVersion = info.version;
    out(`        key backup version ${backupVersion}`);
  });

  let roomId;
  await step("alice creates an encrypted private room on A and invites bob; bob joins from B", async () => {
    const res = await alice.createRoom({
      preset: "private_chat",
      name: `E2EE across sites ${h.suffix}`,
      invite: [bob.getUserId()],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    roomId = res.room_id;
    await waitUntil("bob's invite over federation", [[bob, ClientEvent.Room]], () => bob.getRoom(roomId));
    await bob.joinRoom(roomId);
    await waitUntil(
      "alice to see bob joined",
      [[alice, RoomEvent.Timeline]],
      () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join",
    );
    must(await alice.getCrypto().isEncryptionEnabledInRoom(roomId), "alice's client does not see the room as encrypted");
    await eventually("bob's client to see the room as encrypted", () => bob.getCrypto().isEncryptionEnabledInRoom(roomId));
  });

  await step(
    "alice's client on A gets bob's device and cross-signing keys from B (keys/query across servers)",
    async () => {
      const crypto = alice.getCrypto();
      await eventually("bob's device in alice's client", async () => {
        const devices = (await crypto.getUserDeviceInfo([bob.getUserId()], true)).get(bob.getUserId());
        return devices?.has(bob.getDeviceId());
      });
      await eventually("bob's cross-signing keys in alice's client", () => crypto.userHasCrossSigningKeys(bob.getUserId(), true));
      const status = await crypto.getDeviceVerificationStatus(bob.getUserId(), bob.getDeviceId());
      must(status?.signedByOwner, `alice's client does not see bob's device as signed by bob: ${JSON.stringify(status)}`);
    },
    { soft: true },
  );

  await step(
    "bob's client on B gets alice's device from A (keys/query across servers)",
    () =>
      eventually("alice's device in bob's client", async () => {
        const devices = (await bob.getCrypto().getUserDeviceInfo([alice.getUserId()], true)).get(alice.getUserId());
        return devices?.has(alice.getDeviceId());
      }),
    { soft: true },
  );

  let first;
  await step("alice sends an encrypted message; it reaches bob's client on B", async () => {
    first = (await alice.sendTextMessage(roomId, SECRET_1)).event_id;
    must(first, "no event_id");
    await arrived("bob", bob, roomId, first);
  });
  await step("bob decrypts it (keys/claim and sendToDevice across servers)", () => decrypted("bob", bob, roomId, SECRET_1), {
    soft: true,
  });

  await step("bob answers; it reaches alice's client on A", async () => {
    const id = (await bob.sendTextMessage(roomId, SECRET_2)).event_id;
    await arrived("alice", alice, roomId, id);
  });
  await step("alice decrypts bob's answer", () => decrypted("alice", alice, roomId, SECRET_2), { soft: true });

  const whileDown = [];
  await step("site B stops; alice goes on writing on A", async () => {
    await control("stop B", { down: baseUrlB });
    for (const body of WHILE_DOWN) {
      const res = await alice.sendTextMessage(roomId, body);
      must(res.event_id, `no event_id for "${body}"`);
      whileDown.push(res.event_id);
    }
  });

  await step("site B starts again; bob's client gets every message written meanwhile, in order", async () => {
    await control("start B", { up: baseUrlB });
    // As Element does when the network comes back: sync again at once
    // rather than at the next keep-alive.
    bob.retryImmediately();
    for (const id of whileDown) await arrived("bob", bob, roomId, id);
    const order = liveEvents(bob.getRoom(roomId))
      .map((e) => e.getId())
      .filter((id) => whileDown.includes(id));
    must(JSON.stringify(order) === JSON.stringify(whileDown), `bob's timeline has them as ${order.join(", ")}, sent as ${whileDown.join(", ")}`);
  });
  await step(
    "bob decrypts the messages written while B was down",
    async () => {
      for (const body of WHILE_DOWN) await decrypted("bob", bob, roomId, body);
    },
    { soft: true },
  );

  await step("bob writes after the restart; it reaches alice's client", async () => {
    const id = (await bob.sendTextMessage(roomId, AFTER)).event_id;
    await arrived("alice", alice, roomId, id);
  });
  await step("alice decrypts it", () => decrypted("alice", alice, roomId, AFTER), { soft: true });

  let bob2;
  await step("a new device of bob logs in on B and verifies itself with cross-signing from secret storage", async () => {
    bob2 = await login("bob", "bob2", { baseUrl: baseUrlB });
    const crypto = bob2.getCrypto();
    must(!(await crypto.isCrossSigningReady()), "a new device is cross-signing ready before it was verified");
    // Element's "Verify with Security Key": with the recovery key the
    // private cross-signing keys come out of secret storage, and the new
    // device signs itself with them.
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaPassword("bob") });
    must(await crypto.isCrossSigningReady(), "bob2 is not cross-signing ready after reading its keys from secret storage");
    await eventually("bob2 to be verified by cross-signing in its own eyes", async () => {
      const trust = await crypto.getDeviceVerificationStatus(bob2.getUserId(), bob2.getDeviceId());
      return trust?.crossSigningVerified;
    });
  });

  await step(
    "bob's first device sees his new device verified",
    () =>
      eventually("bob2 verified in bob's first client", async () => {
        const trust = await bob.getCrypto().getDeviceVerificationStatus(bob.getUserId(), bob2.getDeviceId());
        return trust?.crossSigningVerified;
      }),
    { soft: true },
  );

  await step(
    "alice's client on A sees bob's new device, signed by bob (device list update across servers)",
    () =>
      eventually("bob2 signed by bob in alice's client", async () => {
        const trust = await alice.getCrypto().getDeviceVerificationStatus(bob.getUserId(), bob2.getDeviceId());
        return trust?.signedByOwner;
      }),
    { soft: true },
  );

  await step(
    "alice writes again; bob's new device decrypts it",
    async () => {
      await alice.sendTextMessage(roomId, FOR_BOB2);
      await decrypted("bob2", bob2, roomId, FOR_BOB2);
    },
    { soft: true },
  );

  await step(
    "bob's room keys reach the server-side backup on B",
    async () => {
      const crypto = bob.getCrypto();
      let count = 0;
      // Alice's session (with everything she wrote before bob2) and bob's
      // own: his client uploads them one after the other; wait for both.
      await eventually("the backup to hold alice's and bob's room keys", async () => {
        await crypto.checkKeyBackupAndEnable();
        const info = await bob.http.authedRequest("GET", "/room_keys/version");
        count = info.count ?? 0;
        return count >= 2;
      });
      out(`        the backup holds ${count} room key(s)`);
    },
    { soft: true },
  );

  await step("bob's new device restores the backup with the recovery key and decrypts the history", async () => {
    const room = await waitUntil("the room in bob2's client", [[bob2, ClientEvent.Room]], () => bob2.getRoom(roomId));
    await waitUntil(
      "alice's first message in bob2's timeline",
      [[bob2, RoomEvent.Timeline]],
      () => liveEvents(room).find((e) => e.getId() === first),
    );
    const crypto = bob2.getCrypto();
    await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    const result = await crypto.restoreKeyBackup();
    out(`        restored ${result.imported} of ${result.total} key(s) from backup version ${backupVersion}`);
    must(result.imported >= 2, `restoreKeyBackup imported ${result.imported} of ${result.total} keys`);
    for (const ev of liveEvents(room).filter((e) => e.isDecryptionFailure())) {
      await bob2.decryptEventIfNeeded(ev, { isRetry: true });
    }
    for (const body of [SECRET_1, SECRET_2, ...WHILE_DOWN, AFTER]) await decrypted("bob2", bob2, roomId, body);
  });
}
