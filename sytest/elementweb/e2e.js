// A manual check with a real Element Web (1.11.54, Rust crypto) against
// Haven. Two people register through Element's registration page (Element
// sets up cross-signing on the way; its "Who will you chat to the most?"
// screen is skipped); alice creates an encrypted room and invites bob; from
// Element's "Set up Secure Backup" toast alice makes a Security Key and a key
// backup (which gets the room's keys), bob clicks "Later". Both write from the composer and each sees the
// other's message decrypted and with no shield (both devices are signed by
// their owners; a server without cross-signing gets the red "Encrypted by a
// device not verified by its owner"). Then: an image in the encrypted room,
// the room list's unread count and Element's search in a second, unencrypted
// room, an image there shown from the server's thumbnail, the Notifications
// and Security & Privacy settings tabs (loaded; "Cross-signing is ready"),
// and a public space alice makes from the space panel, which bob finds under
// Explore public rooms → Public spaces. It fails on texts Element shows when
// the server falls short ("Your homeserver does not support cross-signing",
// "Unable to set up keys", ...) and on Matrix requests answered with HTTP >=
// 400 other than the expected ones (user-interactive auth's 401, 404
// M_NOT_FOUND for GET /room_keys/version before a backup and for free
// aliases); it prints page errors and toasts, then PASS or FAIL.
//
// Element Web is not on npm and not part of this repository. Build 1.11.54
// under /tmp from the upstream history in the public fork
// xaana/zebra-element-web (release commit "v1.11.54"); its matrix-react-sdk
// 3.89.0 is gone from npm, so pin 3.90.0 and matrix-js-sdk 31.2.0. Node 20,
// npm registry only; about 4 minutes on 2 cores:
//
//   git clone https://github.com/xaana/zebra-element-web /tmp/zebra
//   mkdir /tmp/element-src && cd /tmp/element-src
//   git -C /tmp/zebra archive d7ab867af38b37ba28fd0f51a8c10f9438c64970 | tar -x
//   node -e 'const f="package.json",p=require("./"+f);
//     for (const [n,v] of [["matrix-react-sdk","3.90.0"],["matrix-js-sdk","31.2.0"]]) p.dependencies[n]=p.resolutions[n]=v;
//     require("fs").writeFileSync(f,JSON.stringify(p,null,4)+"\n")'
//   npx -y yarn@1.22.22 install
//   NODE_OPTIONS=--max-old-space-size=8192 npx -y yarn@1.22.22 build    # -> webapp/
//
// Then, with Haven on 127.0.0.1:8008 (HAVEN_REGISTRATION_OPEN=true
// HAVEN_RATE_LIMITS_ENABLED=false, and HAVEN_MEDIA_LEGACY_UNAUTHENTICATED=true:
// 1.11.54 predates authenticated media and loads images from the legacy
// /_matrix/media/v3 endpoints, which Haven freezes by default) and Debian's chromium (apt-get install
// chromium; CHROMIUM names another binary):
//
//   npm ci --prefix sytest/elementweb
//   EW_ROOT=/tmp/element-src/webapp node sytest/elementweb/serve.js &
//   node sytest/elementweb/e2e.js [http://127.0.0.1:8080]
//
// serve.js gives Element the config.json beside it (Haven on the same
// origin, Rust crypto on). Screenshots go to EW_SHOTS (default /tmp);
// EW_CONSOLE=1 prints Element's console errors and warnings. Not part of
// .ci/run, which cannot obtain an Element Web build.
const puppeteer = require('puppeteer-core');
const fs = require('fs');
const path = require('path');

const base = process.argv[2] || 'http://127.0.0.1:8080';
const shots = process.env.EW_SHOTS || '/tmp';
const stamp = Date.now().toString(36);
const pass = 'Correct-Horse-9-Battery';
const sleep = ms => new Promise(r => setTimeout(r, ms));
const problems = [];

// Texts Element shows when the server falls short; seeing any of them, at
// any moment, is a problem.
const banners = [
  'Your homeserver does not support cross-signing',
  'Unable to set up keys',
  'Unable to connect to Homeserver',
  'There was an error loading your notification settings',
  'Unable to query secret storage status',
  'Unable to set up secret storage',
  'Your server is unsupported',
];

// A 64x48 PNG (one colour), written on the fly: the image to send.
function png() {
  const zlib = require('zlib');
  const w = 64, h = 48;
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set([40, 120, 200], y * (w * 3 + 1) + 1 + x * 3);
  const crcTable = [...Array(256)].map((_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
  const crc = b => { let c = 0xffffffff; for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13); ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr.set([8, 2, 0, 0, 0], 8);
  const file = path.join(fs.mkdtempSync('/tmp/ew-img-'), 'picture.png');
  fs.writeFileSync(file, Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]));
  return file;
}

let thumbnails = 0;

// expected tells the failed requests that belong to a working exchange:
// user-interactive auth asks with 401, there is no key backup until
// someone makes one, and a free alias is not found.
function expected(method, url, status, errcode) {
  if (status === 401 && /\/(register|keys\/device_signing\/upload|delete_devices|devices\/)/.test(url)) return true;
  if (status === 404 && method === 'GET' && /\/room_keys\/version$/.test(url) && errcode === 'M_NOT_FOUND') return true;
  // The new space's address field asks, as it is typed, whether it is free.
  if (status === 404 && method === 'GET' && /\/directory\/room\//.test(url) && errcode === 'M_NOT_FOUND') return true;
  return false;
}

async function watch(page, who) {
  const told = new Set();
  page.on('pageerror', e => problems.push(`${who} page error: ${e.message}`));
  if (process.env.EW_CONSOLE) page.on('console', m => { if (['error', 'warn'].includes(m.type())) console.log(`${who} console ${m.type()}: ${m.text().slice(0, 300)}`); });
  page.on('requestfailed', r => { if (r.url().startsWith(base + '/_matrix/')) problems.push(`${who} request failed: ${r.method()} ${r.url().replace(base, '')} ${r.failure().errorText}`); });
  page.on('response', async r => {
    if (r.url().includes('/thumbnail/') && r.status() === 200) thumbnails++;
    if (!r.url().includes('/_matrix/') || r.status() < 400) return;
    const method = r.request().method(), url = r.url().replace(base, '').split('?')[0];
    let body = '';
    try { body = await r.text(); } catch (e) { /* body gone */ }
    let errcode = '';
    try { errcode = JSON.parse(body).errcode || ''; } catch (e) { /* not JSON */ }
    if (expected(method, url, r.status(), errcode)) {
      const line = `${who} HTTP ${r.status()} ${method} ${url.replace(/\/directory\/room\/.*/, '/directory/room/…')} ${errcode} (expected)`;
      if (!told.has(line)) console.log(line);
      told.add(line);
      return;
    }
    console.log(`${who} HTTP ${r.status()} ${method} ${r.url().replace(base, '')} ${body.slice(0, 200)}`);
    problems.push(`${who} got HTTP ${r.status()} ${errcode} for ${method} ${url}`);
  });
  // Banners: the page looks at its own text four times a second and
  // reports each banner once, even one that shows only for a moment.
  const seen = new Set();
  await page.exposeFunction('ewBanner', text => {
    if (seen.has(text)) return;
    seen.add(text);
    console.log(`${who} shows: ${text}`);
    problems.push(`${who}'s Element shows "${text}"`);
  });
  await page.evaluateOnNewDocument(list => {
    setInterval(() => {
      const t = document.body ? document.body.innerText : '';
      for (const b of list) if (t.includes(b)) window.ewBanner(b);
    }, 250);
  }, banners);
}

// clickText clicks the first element matching selector whose text is text,
// waiting for it up to timeout ms.
async function clickText(page, selector, text, timeout = 30000) {
  const h = await page.waitForFunction((s, t) => [...document.querySelectorAll(s)].find(e => e.textContent.trim() === t && e.offsetParent !== null), { timeout }, selector, text);
  await h.asElement().click();
}

async function register(page, user) {
  await page.goto(base + '/#/register', { waitUntil: 'networkidle0', timeout: 60000 });
  await page.waitForSelector('#mx_RegistrationForm_username', { timeout: 30000 });
  await page.type('#mx_RegistrationForm_username', user);
  await page.type('#mx_RegistrationForm_password', pass);
  await page.type('#mx_RegistrationForm_passwordConfirm', pass);
  await page.click('.mx_Login_submit');
  await sleep(1500);
  const cont = await page.$('.mx_QuestionDialog .mx_Dialog_primary'); // "no email address" warning
  if (cont) await cont.click();
  // Element sets up cross-signing with the password just typed (a spinner,
  // "Setting up keys"), then asks "Who will you chat to the most?".
  await clickText(page, '.mx_UseCaseSelection_skip .mx_AccessibleButton', 'Skip', 60000);
  await page.waitForSelector('.mx_LeftPanel', { timeout: 60000 });
  return page.evaluate(() => window.mxMatrixClientPeg.get().getUserId());
}

// crossSigned checks, through the page's own client, that Element runs the
// Rust crypto and that cross-signing is set up with this device signed by
// its owner (what Settings → Security & Privacy summarises).
async function crossSigned(page, who) {
  const s = await page.evaluate(async () => {
    const c = window.mxMatrixClientPeg.get(), crypto = c.getCrypto();
    if (!crypto) return { error: 'no crypto' };
    const dev = await crypto.getDeviceVerificationStatus(c.getUserId(), c.getDeviceId());
    return { version: crypto.getVersion(), ready: await crypto.isCrossSigningReady(), signedByOwner: !!(dev && dev.signedByOwner), verified: !!(dev && dev.crossSigningVerified) };
  });
  console.log(`${who}: ${s.version}; cross-signing ready ${s.ready}; this device signed by its owner ${s.signedByOwner}, verified ${s.verified}`);
  if (s.error || !/^Rust SDK/.test(s.version)) problems.push(`${who}'s Element does not run the Rust crypto (${s.error || s.version})`);
  if (!s.ready || !s.signedByOwner || !s.verified) problems.push(`${who}'s cross-signing is not set up (${JSON.stringify(s)})`);
}

// secureBackup answers Element's "Set up Secure Backup" toast: alice goes
// through it (Continue, "Generate a Security Key", Copy, Continue, Done),
// bob puts it off (Later).
async function secureBackup(page, who, setUp) {
  try {
    await page.waitForFunction(() => [...document.querySelectorAll('.mx_Toast_toast')].some(t => t.textContent.includes('Set up Secure Backup')), { timeout: 30000 });
  } catch (e) {
    problems.push(`${who}'s Element did not offer to set up Secure Backup`);
    return;
  }
  if (!setUp) {
    await clickText(page, '.mx_Toast_toast .mx_AccessibleButton', 'Later');
    console.log(`${who} puts off Secure Backup`);
    return;
  }
  await clickText(page, '.mx_Toast_toast .mx_AccessibleButton', 'Continue');
  try {
    await page.waitForSelector('.mx_CreateSecretStorageDialog', { timeout: 30000 });
    await clickText(page, '.mx_CreateSecretStorageDialog .mx_Dialog_primary', 'Continue'); // "Generate a Security Key" is the default
    await page.waitForSelector('.mx_CreateSecretStorageDialog_recoveryKey', { timeout: 30000 });
    const key = await page.$eval('.mx_CreateSecretStorageDialog_recoveryKey', e => e.textContent.trim());
    await clickText(page, '.mx_CreateSecretStorageDialog_recoveryKeyButtons .mx_AccessibleButton', 'Copy');
    await clickText(page, '.mx_CreateSecretStorageDialog .mx_Dialog_primary', 'Continue');
    // Element may ask for the account password before it stores the keys.
    await page.waitForFunction(() => document.querySelector('.mx_InteractiveAuthEntryComponents input[type=password]') ||
      [...document.querySelectorAll('.mx_CreateSecretStorageDialog .mx_Dialog_primary')].some(b => b.textContent.trim() === 'Done'), { timeout: 60000 });
    const pw = await page.$('.mx_InteractiveAuthEntryComponents input[type=password]');
    if (pw) {
      console.log(`${who}'s Element asks for the password to store the keys`);
      await pw.type(pass);
      await page.keyboard.press('Enter');
    }
    await clickText(page, '.mx_CreateSecretStorageDialog .mx_Dialog_primary', 'Done', 60000);
    const backup = await page.evaluate(async () => (await window.mxMatrixClientPeg.get().getCrypto().getActiveSessionBackupVersion()));
    console.log(`${who} set up Secure Backup (Security Key ${key.slice(0, 4)}…, key backup version ${backup})`);
    if (!backup) problems.push(`${who}'s Element has no active key backup after setting up Secure Backup`);
  } catch (e) {
    const text = await page.evaluate(() => (document.querySelector('.mx_Dialog') || document.body).innerText.slice(0, 300));
    problems.push(`${who} could not set up Secure Backup: ${e.message} (${text.replace(/\n/g, ' | ')})`);
    await page.keyboard.press('Escape');
  }
}

async function say(page, text) {
  await page.waitForSelector('.mx_BasicMessageComposer_input', { timeout: 30000 });
  await page.click('.mx_BasicMessageComposer_input');
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

async function sees(page, who, text) {
  try {
    await page.waitForFunction(t => [...document.querySelectorAll('.mx_EventTile_body')].some(e => e.textContent.includes(t)), { timeout: 30000 }, text);
    console.log(`${who} sees "${text}"`);
    return true;
  } catch (e) {
    problems.push(`${who} does not see "${text}"`);
    return false;
  }
}

// shield checks the decoration Element gives the message with text: with
// both devices cross-signed by their owners, a message from the other
// person carries no shield at all — not the red "Encrypted by a device not
// verified by its owner" of a server without cross-signing, nor a grey one.
async function shield(page, who, text) {
  await sleep(1500); // Element works the shield out after decrypting
  const icon = await page.evaluate(t => {
    const tile = [...document.querySelectorAll('.mx_EventTile')].find(e => (e.querySelector('.mx_EventTile_body') || {}).textContent === t);
    if (!tile) return 'no tile';
    const i = tile.querySelector('.mx_EventTile_e2eIcon');
    return i ? `${i.className.replace('mx_EventTile_e2eIcon mx_EventTile_e2eIcon_', '')} shield "${i.getAttribute('aria-label')}"` : '';
  }, text);
  if (icon) problems.push(`${who} sees "${text}" with ${icon}`);
  else console.log(`${who} sees "${text}" without a shield`);
}

// joinOnInvite waits until the invite reaches the page's client, then joins.
async function joinOnInvite(page, roomId) {
  await page.waitForFunction(id => { const r = window.mxMatrixClientPeg.get().getRoom(id); return r && r.getMyMembership() === 'invite'; }, { timeout: 30000 }, roomId);
  await page.evaluate(id => window.mxMatrixClientPeg.get().joinRoom(id), roomId);
}

// sendImage sends the test picture from the composer of the room on the
// page; false (and a problem) when the composer has no file input.
async function sendImage(page, where) {
  const input = await page.$('.mx_MessageComposer input[type=file]');
  if (!input) {
    problems.push(`no file input in the ${where} composer`);
    return false;
  }
  await input.uploadFile(png());
  await sleep(1000);
  const ok = await page.$('.mx_UploadConfirmDialog .mx_Dialog_primary');
  if (ok) await ok.click();
  return true;
}

// settings opens the user menu's "Notifications" and checks that the tab
// loads (push rules, pushers and GET /account/3pid), then the "Security &
// Privacy" tab, whose cross-signing summary must be a ready one.
async function settings(page, who, wantBackedUp) {
  try {
    await page.click('.mx_UserMenu_contextMenuButton');
    await clickText(page, '.mx_IconizedContextMenu_item', 'Notifications');
    await page.waitForSelector('.mx_UserSettingsDialog', { timeout: 10000 });
    const state = await (await page.waitForFunction(() => {
      const panel = document.querySelector('.mx_UserSettingsDialog .mx_TabbedView_tabPanel');
      if (!panel || panel.querySelector('.mx_Spinner')) return null;
      if (panel.innerText.includes('There was an error loading your notification settings')) return 'error';
      return panel.querySelector('.mx_UserNotifSettings, .mx_ToggleSwitch') ? 'loaded' : null;
    }, { timeout: 30000 })).jsonValue();
    if (state === 'loaded') console.log(`${who}'s Notifications settings load`);
    else problems.push(`${who}'s Notifications settings show an error`);
    await clickText(page, '.mx_UserSettingsDialog .mx_TabbedView_tabLabel', 'Security & Privacy');
    const want = wantBackedUp ? 'Cross-signing is ready for use.' : 'Cross-signing is ready';
    const status = await (await page.waitForFunction(() => {
      const p = [...document.querySelectorAll('.mx_UserSettingsDialog .mx_SettingsSubsection')].find(s => s.textContent.startsWith('Cross-signing'));
      const t = p && p.querySelector('.mx_SettingsSubsection_text');
      return t && !p.querySelector('.mx_Spinner') ? t.textContent.trim() : null;
    }, { timeout: 30000 })).jsonValue();
    if (status.includes(want)) console.log(`${who}'s Security & Privacy says: ${status}`);
    else problems.push(`${who}'s Security & Privacy says "${status}", not "${want}"`);
  } catch (e) {
    problems.push(`${who}'s settings: ${e.message}`);
  }
  await page.keyboard.press('Escape');
  await sleep(500);
}

// publicSpace: alice creates a public space from the space panel ("Create a
// space", Public, a name; the address follows the name) with the two rooms
// Element offers, and bob finds it under "Explore public rooms" → "Public
// spaces".
async function publicSpace(a, b, name) {
  try {
    await a.click('.mx_SpaceButton_new');
    await a.waitForSelector('.mx_SpaceCreateMenuType_public', { timeout: 10000 });
    await a.click('.mx_SpaceCreateMenuType_public');
    await a.waitForSelector('.mx_SpaceBasicSettings input[name=spaceName]', { timeout: 10000 });
    await a.type('.mx_SpaceBasicSettings input[name=spaceName]', name);
    await sleep(1500); // the address field checks the alias is free
    await clickText(a, '.mx_SpaceCreateMenu_wrapper .mx_AccessibleButton_kind_primary', 'Create');
    // The new space offers to make two rooms ("General", "Random"; alice
    // takes them), then to share it ("Go to my first room").
    await a.waitForSelector('#mx_SpaceSetupFirstRooms', { timeout: 60000 });
    await a.click('.mx_SpaceRoomView_buttons input[type=submit]');
    await a.waitForSelector('.mx_SpaceRoomView_publicShare', { timeout: 60000 });
    await a.click('.mx_SpaceRoomView_publicShare .mx_SpaceRoomView_buttons .mx_AccessibleButton');
    await sleep(1000);
    const space = await a.evaluate(n => {
      const c = window.mxMatrixClientPeg.get(), r = c.getRooms().find(r => r.name === n && r.isSpaceRoom());
      return r && `${r.roomId} ${r.getCanonicalAlias()} with ${r.currentState.getStateEvents('m.space.child').length} rooms`;
    }, name);
    console.log(`alice created the public space ${space}`);
  } catch (e) {
    problems.push(`alice could not create a public space: ${e.message}`);
    return;
  }
  try {
    await b.click('.mx_LeftPanel_exploreButton');
    await b.waitForSelector('.mx_SpotlightDialog', { timeout: 10000 });
    await b.click('.mx_SpotlightDialog_filter--close');
    await b.waitForSelector('#mx_SpotlightDialog_button_explorePublicSpaces', { timeout: 10000 });
    await b.click('#mx_SpotlightDialog_button_explorePublicSpaces');
    await b.waitForFunction(n => [...document.querySelectorAll('.mx_SpotlightDialog_section.mx_SpotlightDialog_results .mx_SpotlightDialog_option')].some(o => o.textContent.includes(n)), { timeout: 30000 }, name);
    console.log(`bob finds "${name}" under Explore public rooms → Public spaces`);
  } catch (e) {
    const text = await b.evaluate(() => (document.querySelector('.mx_SpotlightDialog') || document.body).innerText.slice(0, 300));
    problems.push(`bob does not find the public space "${name}" in the room directory (${text.replace(/\n/g, ' | ')})`);
  }
  await b.keyboard.press('Escape');
  await sleep(500);
}

async function toasts(page, who) {
  const list = await page.evaluate(() => [...document.querySelectorAll('.mx_Toast_toast, .mx_ErrorDialog, .mx_RoomStatusBar_unsentMessages')].map(e => e.textContent.trim().slice(0, 120)));
  for (const t of list) console.log(`${who} shows: ${t}`);
  return list;
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const ctxA = await browser.createBrowserContext();
  const ctxB = await browser.createBrowserContext();
  // The Security Key's Copy button writes to the clipboard.
  for (const c of [ctxA, ctxB]) await c.overridePermissions(base, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write']);
  const a = await ctxA.newPage(), b = await ctxB.newPage();
  for (const p of [a, b]) await p.setViewport({ width: 1280, height: 900 });
  await watch(a, 'alice'); await watch(b, 'bob');
  try {
    await run(a, b);
  } finally {
    for (const [p, who] of [[a, 'alice'], [b, 'bob']]) {
      await toasts(p, who).catch(() => {});
      await p.screenshot({ path: path.join(shots, `ew-${who}.png`) }).catch(() => {});
    }
    await browser.close();
  }
  if (problems.length) {
    for (const x of problems) console.log('PROBLEM:', x);
    console.log('FAIL');
    process.exit(1);
  }
  console.log('PASS');
})().catch(e => {
  for (const x of problems) console.log('PROBLEM:', x);
  console.error('FAIL', e.message);
  process.exit(1);
});

async function run(a, b) {
  const alice = await register(a, 'alice' + stamp);
  const bob = await register(b, 'bob' + stamp);
  console.log('registered', alice, bob);
  await crossSigned(a, 'alice');
  await crossSigned(b, 'bob');

  const roomId = await a.evaluate(async (bob) => (await window.mxMatrixClientPeg.get().createRoom({
    name: 'Encrypted room', preset: 'private_chat', invite: [bob],
    initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
  })).room_id, bob);
  console.log('alice created', roomId, 'and invited bob');
  await joinOnInvite(b, roomId);
  console.log('bob joined');

  // Once in an encrypted room, Element offers Secure Backup.
  await secureBackup(a, 'alice', true);
  await secureBackup(b, 'bob', false);

  await a.goto(base + '/#/room/' + roomId, { waitUntil: 'networkidle0' });
  await b.goto(base + '/#/room/' + roomId, { waitUntil: 'networkidle0' });
  await say(a, 'hello bob, this is encrypted');
  if (await sees(b, 'bob', 'hello bob, this is encrypted')) await shield(b, 'bob', 'hello bob, this is encrypted');
  await say(b, 'hello alice, got it');
  if (await sees(a, 'alice', 'hello alice, got it')) await shield(a, 'alice', 'hello alice, got it');

  // An image from alice's composer: Element encrypts it, uploads it and bob's
  // Element downloads and decrypts it.
  if (await sendImage(a, 'encrypted room')) {
    try {
      await b.waitForFunction(() => [...document.querySelectorAll('.mx_MImageBody img')].some(i => i.complete && i.naturalWidth > 0), { timeout: 30000 });
      console.log('bob sees the image');
    } catch (e) {
      problems.push('bob does not see the image');
    }
  }
  // Notification counts and search: a second, unencrypted room. Alice
  // writes while bob looks at the first room; bob's room list shows the
  // unread count, and Element's search finds the message on the server.
  const plainId = await a.evaluate(async (bob) => (await window.mxMatrixClientPeg.get().createRoom({
    name: 'Plain room', preset: 'private_chat', invite: [bob] })).room_id, bob);
  await joinOnInvite(b, plainId);
  await a.evaluate(id => window.mxMatrixClientPeg.get().sendTextMessage(id, 'where is the unicorn report'), plainId);
  try {
    // The invite notified bob too (the default .m.rule.invite_for_me), so
    // the badge shows 2: the invite and the message.
    await b.waitForFunction(() => [...document.querySelectorAll('.mx_RoomTile')].some(t => t.textContent.includes('Plain room') && +((t.querySelector('.mx_NotificationBadge_count') || {}).textContent || 0) === 2), { timeout: 30000 });
    console.log("bob's room list shows 2 unread in the plain room");
  } catch (e) {
    const seen = await b.evaluate(id => { const r = window.mxMatrixClientPeg.get().getRoom(id); return r ? `client count ${r.getUnreadNotificationCount()}, timeline ${r.getLiveTimeline().getEvents().map(e => e.getType()).join(',')}` : 'no room'; }, plainId);
    problems.push(`bob's room list shows no unread count for the plain room (${seen})`);
  }
  await b.goto(base + '/#/room/' + plainId, { waitUntil: 'networkidle0' });
  await sees(b, 'bob', 'where is the unicorn report');
  try {
    await b.click('.mx_LegacyRoomHeader_searchButton');
    await b.waitForSelector('.mx_SearchBar input', { timeout: 10000 });
    await b.type('.mx_SearchBar input', 'unicorn');
    await b.keyboard.press('Enter');
    await b.waitForFunction(() => [...document.querySelectorAll('.mx_RoomView_searchResultsPanel .mx_EventTile_body')].some(e => e.textContent.includes('unicorn')), { timeout: 30000 });
    console.log('bob\'s search finds the message');
  } catch (e) {
    problems.push('bob\'s search does not find the message: ' + e.message);
  }
  // An image in the unencrypted room: bob's Element shows the server's
  // thumbnail of it.
  await a.goto(base + '/#/room/' + plainId, { waitUntil: 'networkidle0' });
  if (await sendImage(a, 'plain room')) {
    await b.click('.mx_SearchBar_cancel').catch(() => {});
    try {
      await b.waitForFunction(() => [...document.querySelectorAll('.mx_MImageBody img')].some(i => i.complete && i.naturalWidth > 0 && !i.src.startsWith('blob:')), { timeout: 30000 });
      console.log(`bob sees the image from the server (${thumbnails} thumbnail request(s) answered)`);
    } catch (e) {
      problems.push('bob does not see a thumbnail of the image in the plain room');
    }
  }

  // Alice's Element backs up the room's keys to the server.
  try {
    const n = await (await a.waitForFunction(async id => {
      const c = window.mxMatrixClientPeg.get();
      const version = await c.getCrypto().getActiveSessionBackupVersion();
      const r = await fetch(`/_matrix/client/v3/room_keys/keys?version=${version}`, { headers: { Authorization: `Bearer ${c.getAccessToken()}` } });
      const sessions = Object.keys((((await r.json()).rooms || {})[id] || {}).sessions || {}).length;
      return sessions > 0 && sessions;
    }, { timeout: 60000, polling: 2000 }, roomId)).jsonValue();
    console.log(`alice's key backup on the server holds ${n} session(s) of the encrypted room`);
  } catch (e) {
    problems.push(`alice's key backup holds no key of the encrypted room: ${e.message}`);
  }
  await settings(a, 'alice', true);
  await settings(b, 'bob', false);
  await publicSpace(a, b, 'Open space ' + stamp);

  await b.goto(base + '/#/room/' + roomId, { waitUntil: 'networkidle0' });
  await sleep(2000);
  const undecryptable = await b.evaluate(() => document.querySelectorAll('.mx_UnknownBody, .mx_DecryptionFailureBody').length);
  if (undecryptable > 0) problems.push(`bob has ${undecryptable} message(s) he cannot decrypt`);
}
