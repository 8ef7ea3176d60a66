// End-to-end test of the web SDK in real headless Chromium: the demo page (built on the npm
// package in wasm/pkg) in two browser contexts chats through the real relay binary over
// WebSocket-over-TLS, one of them also chats with a native client (the `hush` CLI over QUIC),
// what IndexedDB stores is ciphertext,
// a reload keeps history, and a screenshot of the demo is saved to target/web-e2e/demo.png.
//
// Needs: wasm/pkg (scripts/build-wasm.sh), target/debug/hush-relay and target/debug/hush (or
// HUSH_RELAY_BIN / HUSH_CLI_BIN), and Chromium at /usr/bin/chromium (or CHROMIUM).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
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
