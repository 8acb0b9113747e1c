// The end-to-end encryption story, run by `node smoke.mjs URL e2ee` with the
// harness of smoke.mjs (its recording, CORS-checking fetch and its report).
//
// Two users with matrix-js-sdk's Rust crypto (what Element Web runs) talk in
// an encrypted room and decrypt each other's messages. Alice bootstraps
// cross-signing (with user-interactive auth) and secret storage with a new
// key backup, as Element's "set up secure backup" does. Her room keys reach
// the server-side backup. A second login of Alice, a new device with no
// keys, then unlocks secret storage with the recovery key, restores the
// backup and decrypts the room's history.

import { cryptoKit } from "./crypto-kit.mjs";

export async function e2eeStory(h) {
  const { sdk, out, step, must, register, waitUntil, liveEvents } = h;
  const { ClientEvent, RoomEvent } = sdk;

  const { login, uiaPassword, eventually, decrypted } = cryptoKit(h);

  const SECRET_1 = `the first secret ${h.suffix}`;
  const SECRET_2 = `bob's answer ${h.suffix}`;

  await step("alice registers", () => register("alice"));
  await step("bob registers", () => register("bob"));

  let alice;
  let bob;
  await step("alice logs in with Rust crypto (keys/upload, keys/query)", async () => {
    alice = await login("alice", "alice");
    const own = await alice.getCrypto().getUserDeviceInfo([alice.getUserId()]);
    const devices = own.get(alice.getUserId());
    must(devices && devices.has(alice.getDeviceId()), "alice's own device is not in /keys/query");
  });
  await step("bob logs in with Rust crypto", async () => {
    bob = await login("bob", "bob");
  });

  await step("alice bootstraps cross-signing (keys/device_signing/upload with UIA, keys/signatures/upload)", async () => {
    const crypto = alice.getCrypto();
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaPassword("alice") });
    must(await crypto.isCrossSigningReady(), "cross-signing is not ready after bootstrapCrossSigning");
    const status = await crypto.getCrossSigningStatus();
    must(status.publicKeysOnDevice, `cross-signing status: ${JSON.stringify(status)}`);
    // The device's signature comes back through device_lists.changed in
    // /sync and a new /keys/query.
    await eventually("alice's device to be signed by her self-signing key", async () => {
      const trust = await crypto.getDeviceVerificationStatus(alice.getUserId(), alice.getDeviceId());
      return trust?.crossSigningVerified;
    });
  });

  let backupVersion;
  await step("alice sets up secret storage and a new key backup (room_keys/version)", async () => {
    const crypto = alice.getCrypto();
    await crypto.bootstrapSecretStorage({
      createSecretStorageKey: () => crypto.createRecoveryKeyFromPassphrase(),
      setupNewKeyBackup: true,
    });
    must(await crypto.isSecretStorageReady(), "secret storage is not ready");
    const info = await crypto.getKeyBackupInfo();
    must(info && info.version, `no key backup on the server: ${JSON.stringify(info)}`);
    backupVersion = info.version;
    must((await crypto.getActiveSessionBackupVersion()) === backupVersion, "the backup is not active on alice's device");
    out(`        key backup version ${backupVersion}`);
  });

  let roomId;
  await step("alice creates an encrypted private room and invites bob; bob joins", async () => {
    const res = await alice.createRoom({
      preset: "private_chat",
      name: `E2EE ${h.suffix}`,
      invite: [bob.getUserId()],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    roomId = res.room_id;
    await waitUntil("bob's invite", [[bob, ClientEvent.Room]], () => bob.getRoom(roomId));
    await bob.joinRoom(roomId);
    await waitUntil(
      "alice to see bob joined",
      [[alice, RoomEvent.Timeline]],
      () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join",
    );
    must(await alice.getCrypto().isEncryptionEnabledInRoom(roomId), "alice's client does not see the room as encrypted");
  });

  await step("alice sends an encrypted message (keys/claim, sendToDevice); bob decrypts it", async () => {
    const sent = await alice.sendTextMessage(roomId, SECRET_1);
    must(sent.event_id, "no event_id");
    const ev = await decrypted("bob", bob, roomId, SECRET_1);
    must(ev.getWireType() === "m.room.encrypted", `bob got a ${ev.getWireType()}, not m.room.encrypted`);
  });

  await step("bob answers; alice decrypts it", async () => {
    await bob.sendTextMessage(roomId, SECRET_2);
    await decrypted("alice", alice, roomId, SECRET_2);
  });

  await step("alice's room keys reach the server-side backup", async () => {
    const crypto = alice.getCrypto();
    let count = 0;
    // Two sessions: alice's own (her secret) and bob's, which reached her
    // with his answer. Her client uploads them one after the other: wait
    // for both, or the second login may restore only the first.
    await eventually("the backup to hold alice's room keys", async () => {
      await crypto.checkKeyBackupAndEnable();
      const info = await alice.http.authedRequest("GET", "/room_keys/version");
      count = info.count ?? 0;
      return count >= 2;
    });
    out(`        the backup holds ${count} room key(s), etag ${JSON.stringify((await alice.http.authedRequest("GET", "/room_keys/version")).etag)}`);
  });

  await step("a second login of alice restores the backup with the recovery key and decrypts the history", async () => {
    const alice2 = await login("alice", "alice2");
    const room = await waitUntil("the room in alice2's client", [[alice2, ClientEvent.Room]], () => alice2.getRoom(roomId));
    await waitUntil(
      "the first secret in alice2's timeline (undecryptable for now)",
      [[alice2, RoomEvent.Timeline]],
      () => liveEvents(room).find((e) => e.isEncrypted() && e.getSender() === alice.getUserId()),
    );
    const crypto = alice2.getCrypto();
    await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    const result = await crypto.restoreKeyBackup();
    must(result.imported >= 1, `restoreKeyBackup imported ${result.imported} of ${result.total} keys`);
    out(`        restored ${result.imported} of ${result.total} key(s) from backup version ${backupVersion}`);
    for (const ev of liveEvents(room).filter((e) => e.isDecryptionFailure())) {
      await alice2.decryptEventIfNeeded(ev, { isRetry: true });
    }
    await decrypted("alice2", alice2, roomId, SECRET_1);
    await decrypted("alice2", alice2, roomId, SECRET_2);
  });
}
