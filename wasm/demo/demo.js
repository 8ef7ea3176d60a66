// The Hush demo chat: a small page on the @hush/sdk package (../pkg). Each browser profile
// is one device; ?profile=NAME keeps several in one browser. The store key is kept in
// localStorage so a reload reopens the account: fine for a demo, not for an app (derive it
// from a passphrase, or wrap it with a non-extractable WebCrypto key).
import { init, createAccount, openAccount, generateStoreKey, events } from "../pkg/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const profile = params.get("profile") ?? "default";
const saved = `hush-demo:${profile}`;
const ticks = { pending: "…", sent: "✓", delivered: "✓✓", read: "✓✓ read", failed: "failed" };

let client;
let current; // the open conversation (peer account id or group id)
let currentGroup; // the open group's view, when the conversation is a group
const typingTimers = new Map();

function showError(e) {
  $("error").textContent = e?.code ? `${e.code}: ${e.message}` : String(e);
}

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
}

async function start(setup, create) {
  client = create ? await createAccount(setup) : await openAccount(setup);
  $("setup").hidden = true;
  $("add").hidden = $("search-form").hidden = $("new-group").hidden = false;
  $("me").textContent = await client.accountId();
  setState(client.connectionState());
  client.listen(onEvent);
  await renderConversations();
}

async function onEvent(e) {
  try {
    switch (e.type) {
      case "connectionChanged": setState(e.state); break;
      case "messageReceived":
        if (e.message.conversation === current) {
          await renderMessages();
          if (!e.message.outgoing && document.visibilityState === "visible") await client.markRead(current);
        }
        await renderConversations();
        break;
      case "statusChanged":
        if (e.conversation === current) {
          const li = document.querySelector(`#messages li[data-id="${e.messageId}"] .status`);
          if (li) { li.textContent = ticks[e.status] ?? ""; li.parentElement.dataset.status = e.status; }
        }
        break;
      case "typing":
        if (e.conversation === current) {
          // In a group, say who: the contact's name if we have one, else the id's start.
          let who = "";
          if (currentGroup) {
            const c = (await client.contacts()).find((c) => c.accountId === e.from);
            who = (c?.name || e.from.slice(0, 12)) + " is ";
          }
          $("typing").textContent = e.started ? who + "typing…" : "";
          clearTimeout(typingTimers.get(current));
          if (e.started) typingTimers.set(current, setTimeout(() => ($("typing").textContent = ""), 6000));
        }
        break;
      case "transferProgress":
        if (e.upload) $("progress").textContent = e.done < e.total ? `uploading… ${Math.floor((100 * e.done) / e.total)}%` : "";
        break;
      case "contactChanged": await renderConversations(); break;
      case "groupChanged":
        await renderConversations();
        if (e.group === current) await renderGroup();
        break;
      case "error": showError(e); break;
    }
  } catch (err) { showError(err); }
}

async function renderConversations() {
  const list = $("conversations");
  const conversations = await client.conversations();
  const contacts = await client.contacts();
  const known = new Set(conversations.map((c) => c.peer));
  const rows = [...conversations];
  for (const c of contacts) if (!known.has(c.accountId)) rows.push({ peer: c.accountId, name: c.name, unread: 0 });
  list.replaceChildren(...rows.map((c) => {
    const li = document.createElement("li");
    li.dataset.peer = c.peer;
    li.className = c.peer === current ? "active" : "";
    li.textContent = c.name || c.peer.slice(0, 12);
    if (c.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = c.unread;
      li.append(badge);
    }
    li.onclick = () => openConversation(c.peer);
    return li;
  }));
}

async function renderGroup() {
  currentGroup = await client.group(current).catch(() => undefined);
  $("group-info").hidden = !currentGroup;
  if (!currentGroup) return;
  $("group-title").textContent = currentGroup.name;
  $("group-members-list").textContent = currentGroup.members
    .map((m) => m.accountId.slice(0, 8) + (m.admin ? " (admin)" : "")).join(", ");
  $("add-member").hidden = !currentGroup.amAdmin;
  $("composer").hidden = !currentGroup.amMember;
}

async function openConversation(peer) {
  current = peer;
  $("composer").hidden = false;
  $("typing").textContent = "";
  await renderGroup();
  await renderMessages();
  await client.markRead(peer);
  await renderConversations();
  $("text").focus();
}

// Downloaded attachments by message id, as object URLs (downloaded once per page).
const attachmentUrls = new Map();

/** A received or sent file: pictures inline once downloaded, anything else as a link. */
function attachmentElement(m) {
  const a = m.attachment;
  const picture = a.contentType.startsWith("image/");
  const el = document.createElement(picture ? "img" : "a");
  el.className = "attachment";
  el.dataset.id = m.id;
  if (!picture) el.textContent = `📄 ${a.fileName} (${a.size} bytes)`;
  const show = (url) => {
    if (picture) { el.src = url; el.alt = a.fileName; } else { el.href = url; el.download = a.fileName; }
  };
  const known = attachmentUrls.get(m.id);
  if (known) show(known);
  else {
    client.downloadAttachment(m.id).then((bytes) => {
      const url = URL.createObjectURL(new Blob([bytes], { type: a.contentType }));
      attachmentUrls.set(m.id, url);
      show(url);
    }).catch(showError);
  }
  return el;
}

async function renderMessages() {
  const messages = await client.messages(current, undefined, 200);
  $("messages").replaceChildren(...messages.map((m) => {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    li.dataset.status = m.status;
    li.className = m.kind === "groupEvent" ? "event" : m.outgoing ? "out" : "in";
    if (currentGroup && !m.outgoing && m.kind !== "groupEvent") {
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = m.sender.slice(0, 8);
      li.append(who);
    }
    if (m.attachment) li.append(attachmentElement(m));
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = m.body;
    li.append(body);
    if (m.outgoing && m.kind !== "groupEvent") {
      const status = document.createElement("span");
      status.className = "status";
      status.textContent = ticks[m.status] ?? "";
      li.append(status);
    }
    return li;
  }));
  $("messages").scrollTop = $("messages").scrollHeight;
}

$("setup").onsubmit = async (ev) => {
  ev.preventDefault();
  const setup = { database: `hush-${profile}`, storeKey: generateStoreKey(), relayUrl: $("relay-url").value };
  try {
    await start(setup, true);
    localStorage.setItem(saved, JSON.stringify({ ...setup, storeKey: Array.from(setup.storeKey) }));
  } catch (e) { showError(e); }
};

$("add").onsubmit = async (ev) => {
  ev.preventDefault();
  try {
    const c = await client.addContact($("contact-id").value.trim(), $("contact-name").value.trim());
    $("contact-id").value = $("contact-name").value = "";
    await openConversation(c.accountId);
  } catch (e) { showError(e); }
};

$("new-group").onsubmit = async (ev) => {
  ev.preventDefault();
  try {
    const members = $("group-members").value.split(/[\s,]+/).filter(Boolean);
    const id = await client.createGroup($("group-name").value.trim(), "", members);
    $("group-name").value = $("group-members").value = "";
    await openConversation(id);
    await renderConversations();
  } catch (e) { showError(e); }
};

$("add-member").onsubmit = async (ev) => {
  ev.preventDefault();
  try {
    await client.addGroupMembers(current, [$("member-id").value.trim()]);
    $("member-id").value = "";
    await renderGroup();
  } catch (e) { showError(e); }
};

let typing = false;
$("text").oninput = () => {
  const now = $("text").value.length > 0;
  if (now !== typing && current) { typing = now; client.setTyping(current, now).catch(showError); }
};

$("composer").onsubmit = async (ev) => {
  ev.preventDefault();
  const text = $("text").value;
  if (!text || !current) return;
  $("text").value = "";
  typing = false;
  try {
    await client.sendText(current, text);
    await renderMessages();
    await renderConversations();
  } catch (e) { showError(e); }
};

$("attach").onchange = async () => {
  const file = $("attach").files[0];
  $("attach").value = "";
  if (!file || !current) return;
  try {
    const messageId = client.newMessageId();
    // The File itself: read slice by slice as it uploads, not into memory first.
    await client.sendFile(current, file, {
      fileName: file.name, contentType: file.type, caption: $("text").value, messageId,
    });
    $("text").value = "";
    $("progress").textContent = "";
    await renderMessages();
    await renderConversations();
  } catch (e) { showError(e); }
};

$("search").oninput = async () => {
  const q = $("search").value.trim();
  const hits = q ? await client.search(q, 20) : [];
  $("search-results").replaceChildren(...hits.map((h) => {
    const li = document.createElement("li");
    li.textContent = h.message.body;
    li.onclick = () => openConversation(h.conversation);
    return li;
  }));
};

await init();
const stored = localStorage.getItem(saved);
if (stored) {
  const s = JSON.parse(stored);
  start({ ...s, storeKey: new Uint8Array(s.storeKey) }, false).catch(showError);
} else {
  $("relay-url").value = params.get("relay") ?? `wss://${location.hostname || "127.0.0.1"}:4443`;
  $("setup").hidden = false;
}
// For the end-to-end test: the page is ready, and its client.
window.hushDemo = { ready: true, get client() { return client; } };
