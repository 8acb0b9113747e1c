// A manual check with a real Element Web against Haven: two people register
// through Element's own registration page, one creates an encrypted room
// and invites the other, both write from the composer, each sees the
// other's message decrypted, an image sent from the composer shows on the
// other side, the room list counts an unread message, Element's search finds
// a message, and an image in an unencrypted room shows from the server
// (counting the thumbnails the server served). It prints the Matrix requests that failed (HTTP >= 400),
// page errors, the toasts Element shows, and PASS or FAIL.
//
// Element Web is not on npm and is not part of this repository: point
// EW_ROOT at any built Element Web (its webapp folder with a config.json
// whose default_server_config names http://127.0.0.1:8080, see config.json
// here) and run, with Haven listening on 127.0.0.1:8008 with registration
// open:
//
//   npm ci --prefix sytest/elementweb
//   EW_ROOT=/path/to/webapp node sytest/elementweb/serve.js &
//   node sytest/elementweb/e2e.js [http://127.0.0.1:8080]
//
// Screenshots go to EW_SHOTS (default /tmp). Chromium comes from Debian
// (apt-get install chromium); CHROMIUM names another binary. It is not part
// of .ci/run, which cannot obtain an Element Web build.
const puppeteer = require('puppeteer-core');
const fs = require('fs');
const path = require('path');

const base = process.argv[2] || 'http://127.0.0.1:8080';
const shots = process.env.EW_SHOTS || '/tmp';
const stamp = Date.now().toString(36);
const pass = 'Correct-Horse-9-Battery';
const sleep = ms => new Promise(r => setTimeout(r, ms));
const problems = [];

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

function watch(page, who) {
  page.on('pageerror', e => problems.push(`${who} page error: ${e.message}`));
  page.on('response', r => {
    if (r.url().includes('/thumbnail/') && r.status() === 200) thumbnails++;
    if (r.url().includes('/_matrix/') && r.status() >= 400) console.log(`${who} HTTP ${r.status()} ${r.request().method()} ${r.url().replace(base, '')}`);
  });
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
  await page.waitForSelector('.mx_LeftPanel', { timeout: 60000 });
  return page.evaluate(() => window.mxMatrixClientPeg.get().getUserId());
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
  } catch (e) {
    problems.push(`${who} does not see "${text}"`);
  }
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
  const a = await ctxA.newPage(), b = await ctxB.newPage();
  for (const p of [a, b]) await p.setViewport({ width: 1280, height: 900 });
  watch(a, 'alice'); watch(b, 'bob');

  const alice = await register(a, 'alice' + stamp);
  const bob = await register(b, 'bob' + stamp);
  console.log('registered', alice, bob);

  const roomId = await a.evaluate(async (bob) => (await window.mxMatrixClientPeg.get().createRoom({
    name: 'Encrypted room', preset: 'private_chat', invite: [bob],
    initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
  })).room_id, bob);
  console.log('alice created', roomId, 'and invited bob');
  await joinOnInvite(b, roomId);
  console.log('bob joined');

  await a.goto(base + '/#/room/' + roomId, { waitUntil: 'networkidle0' });
  await b.goto(base + '/#/room/' + roomId, { waitUntil: 'networkidle0' });
  await say(a, 'hello bob, this is encrypted');
  await sees(b, 'bob', 'hello bob, this is encrypted');
  await say(b, 'hello alice, got it');
  await sees(a, 'alice', 'hello alice, got it');

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
    await b.click('.mx_RoomHeader_searchButton');
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
  await sleep(2000);
  const undecryptable = await b.evaluate(() => document.querySelectorAll('.mx_UnknownBody, .mx_DecryptionFailureBody').length);
  if (undecryptable > 0) problems.push(`bob has ${undecryptable} message(s) he cannot decrypt`);
  for (const [p, who] of [[a, 'alice'], [b, 'bob']]) {
    await toasts(p, who);
    await p.screenshot({ path: path.join(shots, `ew-${who}.png`) });
  }
  await browser.close();
  if (problems.length) {
    for (const x of problems) console.log('PROBLEM:', x);
    console.log('FAIL');
    process.exit(1);
  }
  console.log('PASS');
})().catch(e => { console.error('FAIL', e.message); process.exit(1); });
