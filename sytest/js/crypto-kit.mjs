// What the encrypted stories (e2ee.mjs, e2ee-federation.mjs) share: logging
// in with the SDK's Rust crypto, the recovery key a user keeps, the
// password stage of user-interactive auth, and waits for decryption.

export function cryptoKit(h) {
  const { sdk, users, out, must, newClient, startAndWaitForSync, waitUntil, liveEvents } = h;
  const { RoomEvent } = sdk;

  // What the user would type or keep: the recovery key of secret storage.
  const ssssKeys = new Map(); // key ID -> private key
  const cryptoCallbacks = {
    cacheSecretStorageKey: (keyId, _info, key) => {
      ssssKeys.set(keyId, key);
    },
    getSecretStorageKey: async ({ keys }) => {
      for (const keyId of Object.keys(keys)) {
        const key = ssssKeys.get(keyId);
        if (key) return [keyId, key];
      }
      return null;
    },
  };

  // Log in as Element does, then start the Rust crypto (in memory: Node has
  // no IndexedDB) before the client syncs. baseUrl: the user's server when
  // it is not the harness's first one.
  async function login(who, label, { baseUrl } = {}) {
    const site = baseUrl ? { baseUrl } : {};
    const tmp = newClient(`${label}/login`, undefined, site);
    const res = await tmp.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: users[who].username },
      password: users[who].password,
      initial_device_display_name: `Haven e2ee (${label})`,
    });
    must(res.access_token && res.device_id, `login gave no access_token/device_id: ${JSON.stringify(res)}`);
    const client = newClient(label, res, { cryptoCallbacks, ...site });
    await client.initRustCrypto({ useIndexedDB: false });
    await startAndWaitForSync(label, client);
    out(`        ${label} is ${res.user_id} on device ${res.device_id}`);
    return client;
  }

  // The user-interactive auth of /keys/device_signing/upload: try without
  // auth (a first upload may need none), else answer the password stage.
  function uiaPassword(who) {
    return async (makeRequest) => {
      try {
        return await makeRequest(null);
      } catch (e) {
        if (e?.httpStatus !== 401 || !e.data?.flows) throw e;
        return await makeRequest({
          type: "m.login.password",
          identifier: { type: "m.id.user", user: users[who].username },
          password: users[who].password,
          session: e.data.session,
        });
      }
    };
  }

  // Resolves once the async check returns a truthy value (polled).
  async function eventually(desc, check) {
    const deadline = Date.now() + h.STEP_MS;
    for (;;) {
      const v = await check();
      if (v) return v;
      must(Date.now() < deadline, `timed out after ${h.STEP_MS} ms waiting for ${desc}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  // Waits until the client shows a decrypted message with this body.
  function decrypted(label, client, roomId, body) {
    return waitUntil(
      `${label} to decrypt "${body}"`,
      [[client, RoomEvent.Timeline], [client, sdk.MatrixEventEvent?.Decrypted ?? "Event.decrypted"]],
      () => {
        const room = client.getRoom(roomId);
        if (!room) return false;
        return room
          .getLiveTimeline()
          .getEvents()
          .find((e) => e.isEncrypted() && !e.isDecryptionFailure() && e.getContent()?.body === body);
      },
      () => {
        const room = client.getRoom(roomId);
        if (!room) return "room not in the client";
        const enc = liveEvents(room).filter((e) => e.isEncrypted());
        return `${enc.length} encrypted events: ${enc.map((e) => (e.isDecryptionFailure() ? `UTD(${e.decryptionFailureReason})` : JSON.stringify(e.getContent()?.body))).join(", ")}`;
      },
    );
  }

  return { cryptoCallbacks, login, uiaPassword, eventually, decrypted };
}
