// End-to-end test of the web SDK in real headless Chromium: the demo page (built on the npm
// package in wasm/pkg) in two browser contexts chats through the real relay binary over
// WebSocket-over-TLS, one of them also chats with a native client (the `hush` CLI over QUIC),
// what IndexedDB stores is ciphertext, a reload keeps history, a group of two browsers and a
// native client chats, and pictures and a 5 MiB file go between them (sent from the page's file
// input, shown inline); screenshots go to target/web-e2e/ (demo.png, demo-group.png,
// demo-attachment.png).
//
// Needs: wasm/pkg (scripts/build-wasm.sh), target/debug/hush-relay and target/debug/hush (or
// HUSH_RELAY_BIN / HUSH_CLI_BIN), and Chromium at /usr/bin/chromium (or CHROMIUM).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { deflateSync } from "node:zlib";
import { chromium } from "playwright-core";
import { serve } from "../demo/serve.mjs";

const root = fileURLToPath(new URL("../..", import.meta.url));
// The test kit's relay launcher: it starts target/debug/hush-relay on loopback on a data
// directory of its own, and stops it when its standard input closes.
const testRelayBin = process.env.HUSH_TEST_RELAY ?? join(root, "target/debug/hush-test-relay");
const cliBin = process.env.HUSH_CLI_BIN ?? join(root, "target/debug/hush");
const artifacts = join(root, "target/web-e2e");
const run = promisify(execFile);

let relay, site, server, browser, work;

/** Starts the relay and resolves with its ready line's fields once it prints it. */
function startRelay() {
  const child = spawn(testRelayBin, [], { stdio: ["pipe", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once("line", (line) => {
      const field = (k) => line.split(" ").find((w) => w.startsWith(`${k}=`))?.slice(k.length + 1);
      resolve({ child, quic: field("quic"), ws: field("ws"), pin: field("pin"), data: field("data") });
    });
    child.once("exit", (code) => reject(new Error(`hush-test-relay exited with ${code} before it was ready`)));
  });
}

/** The base64 SHA-256 of the certificate's public key, for Chromium's SPKI allow-list. */
function spkiHash(dataDir) {
  const cert = new X509Certificate(readFileSync(join(dataDir, "tls/cert.der")));
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/** The `hush` CLI as a native device in `dir`. */
function nativeClient(dir) {
  const args = ["--dir", dir, "--relay", relay.quic, "--pin", relay.pin];
  return async (...cmd) => (await run(cliBin, [...args, ...cmd], { timeout: 60_000 })).stdout;
}

async function openDemo(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error:`, e));
  page.on("console", (m) => { if (m.type() === "error") console.error(`[${name}]`, m.text()); });
  await page.goto(`${site}/demo/?relay=wss://${relay.ws}`);
  return page;
}

async function createAccount(page) {
  await page.click("#create");
  await page.waitForFunction(() => document.querySelector("#me").textContent.length === 64);
  await page.waitForSelector('#state[data-state="connected"]');
  return page.textContent("#me");
}

const bodies = (page) => page.$$eval("#messages li .body", (els) => els.map((e) => e.textContent));
// The chat with the native client has two messages too: wait for Bob's, not for a count, or a
// page still showing the previous conversation passes.
const showsBobsConversation = (page) =>
  page.waitForFunction(() => {
    const shown = [...document.querySelectorAll("#messages li .body")].map((e) => e.textContent);
    return shown.length === 2 && shown.includes("Hi Alice! Read you loud and clear.");
  });

before(async () => {
  work = mkdtempSync(join(tmpdir(), "hush-web-e2e-"));
  mkdirSync(artifacts, { recursive: true });
  relay = await startRelay();
  server = await serve(0);
  site = `http://127.0.0.1:${server.address().port}`;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
      // Trust exactly the relay's self-signed certificate (by its key), nothing else.
      `--ignore-certificate-errors-spki-list=${spkiHash(relay.data)}`,
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
  // Closing its input stops the relay and removes its directory.
  relay?.child.stdin.end();
  if (relay) await new Promise((resolve) => relay.child.exitCode !== null ? resolve() : relay.child.once("exit", resolve));
  if (work) rmSync(work, { recursive: true, force: true });
});

test("two browsers chat through the relay, one also with a native client, and a reload keeps history", async () => {
  const alice = await openDemo("alice");
  const bob = await openDemo("bob");
  const aliceId = await createAccount(alice);
  const bobId = await createAccount(bob);
  assert.notEqual(aliceId, bobId);

  // Alice adds Bob and writes; Bob (a stranger to her so far) gets the conversation.
  await alice.fill("#contact-id", bobId);
  await alice.fill("#contact-name", "Bob");
  await alice.click("#add-contact");
  await alice.waitForSelector("#composer:not([hidden])");
  await alice.fill("#text", "Hello Bob, grüße aus dem Browser 👋");
  await alice.click("#send");
  await bob.click(`#conversations li[data-peer="${aliceId}"]`);
  await bob.waitForFunction(() =>
    [...document.querySelectorAll("#messages li .body")].some((e) => e.textContent.includes("grüße")));
  // Bob has the conversation open, so it is marked read: Alice sees sent → delivered → read.
  await alice.waitForSelector('#messages li.out[data-status="read"]');

  // Typing reaches the open conversation, then the reply arrives.
  await alice.fill("#text", "typing…");
  await bob.waitForFunction(() => document.querySelector("#typing").textContent === "typing…");
  await alice.fill("#text", "");
  await bob.fill("#text", "Hi Alice! Read you loud and clear.");
  await bob.click("#send");
  await alice.waitForFunction(() =>
    [...document.querySelectorAll("#messages li .body")].some((e) => e.textContent.includes("loud and clear")));

  // What IndexedDB holds is ciphertext: no stored key or value contains a message's text.
  const scan = await alice.evaluate(async (needle) => {
    const db = await new Promise((resolve, reject) => {
      const r = indexedDB.open("hush-default");
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const hex = (b) => Array.from(new Uint8Array(b.buffer ?? b), (x) => x.toString(16).padStart(2, "0")).join("");
    const target = hex(new TextEncoder().encode(needle));
    let rows = 0, hits = 0;
    for (const name of db.objectStoreNames) {
      const store = () => db.transaction(name).objectStore(name);
      const [keys, values] = await Promise.all(["getAllKeys", "getAll"].map((m) =>
        new Promise((resolve) => { const r = store()[m](); r.onsuccess = () => resolve(r.result); })));
      rows += values.length;
      hits += [...keys, ...values].filter((b) => hex(b).includes(target)).length;
    }
    db.close();
    return { rows, hits };
  }, "loud and clear");
  assert.ok(scan.rows > 10, `expected stored rows, got ${scan.rows}`);
  assert.equal(scan.hits, 0, "plaintext found in IndexedDB");

  // A native device (QUIC, redb) chats with the browser (WebSocket, IndexedDB).
  const native = nativeClient(join(work, "native"));
  await native("create");
  const nativeId = (await native("id")).match(/account ([0-9a-f]{64})/)[1];
  await native("add", aliceId, "Alice");
  await native("send", aliceId, "hello from the native client");
  await alice.click(`#conversations li[data-peer="${nativeId}"]`);
  await alice.waitForFunction(() =>
    [...document.querySelectorAll("#messages li .body")].some((e) => e.textContent === "hello from the native client"));
  await alice.fill("#text", "hi native, from the browser");
  await alice.click("#send");
  // The native device is offline between commands: the relay holds the message for it.
  await alice.waitForSelector('#messages li.out:not([data-status="pending"])');
  let history = "";
  for (let i = 0; i < 10 && !history.includes("hi native, from the browser"); i++) {
    history = await native("history", aliceId);
  }
  assert.match(history, /hi native, from the browser/);
  // Its delivery receipt comes back to the browser.
  await alice.waitForSelector('#messages li.out[data-status="delivered"]');

  // Reload: identity, sessions and history come back from IndexedDB.
  await alice.click(`#conversations li[data-peer="${bobId}"]`);
  await showsBobsConversation(alice);
  const before = await bodies(alice);
  await alice.reload();
  await alice.waitForFunction(() => document.querySelector("#me").textContent.length === 64);
  assert.equal(await alice.textContent("#me"), aliceId);
  await alice.click(`#conversations li[data-peer="${bobId}"]`);
  await showsBobsConversation(alice);
  assert.deepEqual(await bodies(alice), before);
  await alice.fill("#search", "grüße");
  await alice.waitForFunction(() => document.querySelector("#search-results li")?.textContent.includes("grüße"));

  // The restored session still works both ways.
  await alice.waitForSelector('#state[data-state="connected"]');
  await alice.fill("#text", "after the reload");
  await alice.click("#send");
  await bob.waitForFunction(() =>
    [...document.querySelectorAll("#messages li .body")].some((e) => e.textContent === "after the reload"));
  await alice.screenshot({ path: join(artifacts, "demo.png"), fullPage: true });
});

test("a group of two browsers and a native client", async () => {
  const alice = await openDemo("group-alice");
  const bob = await openDemo("group-bob");
  const aliceId = await createAccount(alice);
  const bobId = await createAccount(bob);
  const native = nativeClient(join(work, "group-native"));
  await native("create");
  const nativeId = (await native("id")).match(/account ([0-9a-f]{64})/)[1];

  // Alice creates the group from the demo page with Bob and the native device in it.
  await alice.fill("#group-name", "Browsers & CLI");
  await alice.fill("#group-members", `${bobId} ${nativeId}`);
  await alice.click("#create-group");
  await alice.waitForSelector("#group-info:not([hidden])");
  const group = await alice.evaluate(() => document.querySelector("#conversations li.active").dataset.peer);
  assert.equal(group.length, 64);
  await alice.fill("#text", "hello group, from a browser");
  await alice.click("#send");

  // Bob's page lists the group; he opens it and replies.
  await bob.waitForSelector(`#conversations li[data-peer="${group}"]`);
  await bob.click(`#conversations li[data-peer="${group}"]`);
  await bob.waitForFunction(() =>
    [...document.querySelectorAll("#messages li .body")].some((e) => e.textContent === "hello group, from a browser"));
  assert.match(await bob.textContent("#group-title"), /Browsers & CLI/);
  await bob.fill("#text", "bob's browser here");
  await bob.click("#send");

  // The native device reads both and writes to the group over QUIC.
  let history = "";
  for (let i = 0; i < 20 && !history.includes("bob's browser here"); i++) {
    history = await native("history", group);
  }
  assert.match(history, /hello group, from a browser/);
  assert.match(history, /bob's browser here/);
  await native("send", group, "and the native client");
  for (const page of [alice, bob]) {
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#messages li .body")].some((e) => e.textContent === "and the native client"));
  }
  // Everyone has Alice's first message: delivered to every member.
  await alice.waitForSelector('#messages li.out[data-status="delivered"], #messages li.out[data-status="read"]');
  const order = async (page) => page.$$eval("#messages li:not(.event) .body", (els) => els.map((e) => e.textContent));
  assert.deepEqual(await order(alice), await order(bob));
  await alice.screenshot({ path: join(artifacts, "demo-group.png"), fullPage: true });
});

/** A w×h RGB PNG with a colour gradient (a real picture the browser decodes). */
function png(w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => { let c = 0xffffffff; for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4); sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  const rows = [];
  for (let y = 0; y < h; y++) {
    const row = Buffer.alloc(1 + 3 * w);
    for (let x = 0; x < w; x++) row.set([(x * 255) / w, (y * 255) / h, 160], 1 + 3 * x);
    rows.push(row);
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.concat(rows))), chunk("IEND", Buffer.alloc(0))]);
}

test("a picture goes between two browsers and a native client, shown inline; a 5 MiB file arrives intact", async () => {
  const alice = await openDemo("pic-alice");
  const bob = await openDemo("pic-bob");
  const aliceId = await createAccount(alice);
  const bobId = await createAccount(bob);
  const native = nativeClient(join(work, "pic-native"));
  await native("create");
  const nativeId = (await native("id")).match(/account ([0-9a-f]{64})/)[1];
  await alice.fill("#group-name", "Pictures");
  await alice.fill("#group-members", `${bobId} ${nativeId}`);
  await alice.click("#create-group");
  await alice.waitForSelector("#group-info:not([hidden])");
  const group = await alice.evaluate(() => document.querySelector("#conversations li.active").dataset.peer);

  // Alice picks a picture with the file input; it is encrypted, uploaded and sent.
  const picture = png(320, 200);
  await alice.fill("#text", "the view from here");
  await alice.setInputFiles("#attach", { name: "view.png", mimeType: "image/png", buffer: picture });
  const decoded = (page) => page.waitForFunction(() =>
    [...document.querySelectorAll("#messages img.attachment")].some((i) => i.complete && i.naturalWidth === 320));
  await decoded(alice);

  // Bob's browser shows it inline, decoded from what it downloaded and decrypted.
  await bob.waitForSelector(`#conversations li[data-peer="${group}"]`);
  await bob.click(`#conversations li[data-peer="${group}"]`);
  await decoded(bob);
  assert.ok((await bodies(bob)).includes("the view from here"));

  // The native client sees the file and saves it: the same bytes.
  let history = "";
  for (let i = 0; i < 20 && !history.includes("view.png"); i++) history = await native("history", group);
  const id = history.match(/\[file view\.png \(\d+ bytes\), id ([0-9a-f]{32})\]/)[1];
  const saved = join(work, "pic-native", "view.png");
  await native("save", id, saved);
  assert.deepEqual(readFileSync(saved), picture);

  // And sends one back from a path; both browsers show it.
  const back = join(work, "pic-native", "reply.png");
  writeFileSync(back, png(100, 60));
  await native("send-file", "--content-type", "image/png", group, back, "from", "the", "cli");
  for (const page of [alice, bob]) {
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#messages img.attachment")].some((i) => i.complete && i.naturalWidth === 100));
  }
  // A 5 MiB file (not a picture) from Alice's file input: Bob's browser downloads, checks and
  // decrypts it into a link whose bytes are the same.
  const big = Buffer.alloc(5 * 1024 * 1024 + 321);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
  await alice.setInputFiles("#attach", { name: "data.bin", mimeType: "application/octet-stream", buffer: big });
  const link = await bob.waitForSelector('#messages a.attachment[download="data.bin"][href^="blob:"]', { timeout: 60_000 });
  const digest = await bob.evaluate(async (href) => {
    const bytes = await (await fetch(href)).arrayBuffer();
    const d = await crypto.subtle.digest("SHA-256", bytes);
    return Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
  }, await link.getAttribute("href"));
  assert.equal(digest, createHash("sha256").update(big).digest("hex"));
  // A ReadableStream (3 MiB in uneven chunks, made in Alice's page) through the SDK's
  // sendFile: read chunk by chunk as it uploads; Bob's bytes match.
  const streamLen = 3 * 1024 * 1024 + 5;
  const streamed = Buffer.alloc(streamLen);
  for (let i = 0; i < streamLen; i++) streamed[i] = (i * 31) % 253;
  const leftBehind = await alice.evaluate(async (len) => {
    const peer = document.querySelector("#conversations li.active").dataset.peer;
    let at = 0;
    const stream = new ReadableStream({
      pull(controller) {
        if (at >= len) return controller.close();
        const n = Math.min(len - at, 70_001);
        const chunk = new Uint8Array(n);
        for (let i = 0; i < n; i++) chunk[i] = ((at + i) * 31) % 253;
        at += n;
        controller.enqueue(chunk);
      },
    });
    const client = window.hushDemo.client;
    const id = await client.sendFile(peer, stream, { fileName: "stream.bin", size: len });
    return { id, pending: (await client.pendingUploads()).length };
  }, streamLen);
  assert.equal(leftBehind.pending, 0, "nothing left pending once sent");
  const streamLink = await bob.waitForSelector('#messages a.attachment[download="stream.bin"][href^="blob:"]', { timeout: 60_000 });
  const streamDigest = await bob.evaluate(async (href) => {
    const bytes = await (await fetch(href)).arrayBuffer();
    const d = await crypto.subtle.digest("SHA-256", bytes);
    return Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
  }, await streamLink.getAttribute("href"));
  assert.equal(streamDigest, createHash("sha256").update(streamed).digest("hex"));
  // Bob's page downloads it again into a WritableStream, closed once the file checked.
  const writtenDigest = await bob.evaluate(async (id) => {
    const chunks = [];
    let closed = false;
    const sink = new WritableStream({ write(c) { chunks.push(c); }, close() { closed = true; } });
    await window.hushDemo.client.downloadAttachmentTo(id, sink);
    if (!closed) return "not closed";
    const d = await crypto.subtle.digest("SHA-256", await new Blob(chunks).arrayBuffer());
    return Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
  }, leftBehind.id);
  assert.equal(writtenDigest, createHash("sha256").update(streamed).digest("hex"));
  await bob.screenshot({ path: join(artifacts, "demo-attachment.png"), fullPage: true });
});
