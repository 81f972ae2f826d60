// translog explorer: read-only, verifies every event in the browser with WebCrypto.
// Checks, for an event: the checkpoint note carries a valid Ed25519 signature by the pinned
// vkey (C2SP signed-note), its origin is the vkey's name, the leaf hashes into the
// checkpoint's root through the RFC 9162 inclusion proof, and the payload and salt open the
// leaf's commitment SHA-256(salt || payload) (or the leaf holds the payload inline).
"use strict";

const base = location.pathname.replace(/\/explorer\/?$/, "");
const enc = new TextEncoder();
const $ = (id) => document.getElementById(id);

function b64decode(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
    throw new Error("bad base64");
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

const leafHash = (leaf) => sha256(concat(new Uint8Array([0]), leaf));
const nodeHash = (l, r) => sha256(concat(new Uint8Array([1]), l, r));

// RFC 9162 section 2.1.3.2
async function verifyInclusion(index, size, hash, proof, root) {
  if (index >= size) throw new Error(`index ${index} is not below the tree size ${size}`);
  let fn = index, sn = size - 1, r = hash;
  for (const p of proof) {
    if (p.length !== 32) throw new Error("a proof hash is not 32 bytes");
    if (sn === 0) throw new Error("the proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("the proof is too short");
  if (!equal(r, root)) throw new Error("the proof does not lead to the checkpoint's root");
}

function parseVkey(vkey) {
  // <name>+<8 hex key ID>+<base64 key>; the base64 may itself contain "+"
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+(\S+)$/.exec(vkey.trim());
  if (!m) throw new Error("malformed vkey");
  const parts = [m[1], m[2], m[3]];
  const key = b64decode(parts[2]);
  if (key.length !== 33 || key[0] !== 1) throw new Error("the vkey is not an Ed25519 note key");
  const id = new Uint8Array(parts[1].match(/../g).map((h) => parseInt(h, 16)));
  return { name: parts[0], id, pub: key.slice(1) };
}

// C2SP signed-note: text, blank line, signature lines "— <name> <base64(id || sig)>"
function parseNote(note) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new Error("the checkpoint has no signature block");
  const text = note.slice(0, split + 1);
  const sigs = [];
  for (const line of note.slice(split + 2).split("\n")) {
    if (!line) continue;
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new Error("malformed signature line");
    sigs.push({ name: m[1], raw: b64decode(m[2]) });
  }
  const lines = text.split("\n");
  if (lines.length < 4) throw new Error("the checkpoint body is too short");
  const size = Number(lines[1]);
  if (!/^(0|[1-9][0-9]*)$/.test(lines[1]) || !Number.isSafeInteger(size)) {
    throw new Error("bad checkpoint size");
  }
  return { text, sigs, origin: lines[0], size, root: b64decode(lines[2]) };
}

async function verifyCheckpoint(note, vkeyText) {
  const vkey = parseVkey(vkeyText);
  const cp = parseNote(note);
  if (cp.origin !== vkey.name) throw new Error(`checkpoint origin ${cp.origin} is not ${vkey.name}`);
  const mine = cp.sigs.filter((s) => s.name === vkey.name && equal(s.raw.slice(0, 4), vkey.id));
  if (!mine.length) throw new Error("no signature by the pinned vkey");
  const key = await crypto.subtle.importKey("raw", vkey.pub, { name: "Ed25519" }, false, ["verify"]);
  for (const s of mine) {
    if (s.raw.length !== 68) throw new Error("malformed log signature");
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, s.raw.slice(4), enc.encode(cp.text));
    if (!ok) throw new Error("the checkpoint's log signature does not verify");
  }
  cp.cosigners = cp.sigs.filter((s) => s.name !== vkey.name).map((s) => s.name);
  return cp;
}

async function verifyResult(result, note, vkeyText, checks) {
  const step = (text) => checks.push(text);
  const cp = await verifyCheckpoint(note, vkeyText);
  step(`checkpoint signed by ${cp.origin} (Ed25519, WebCrypto), size ${cp.size}`);
  const leaf = b64decode(result.leaf);
  if (leaf.length < 10 || leaf[0] !== 1) throw new Error("the leaf is not a translog v1 leaf");
  const proof = result.inclusion_proof.map(b64decode);
  await verifyInclusion(result.index, cp.size, await leafHash(leaf), proof, cp.root);
  step(`leaf ${result.index} is in the tree of size ${cp.size} (${proof.length} proof hashes, SHA-256)`);
  if (result.status === "present") {
    if (leaf[9] !== 1 || leaf.length !== 42) throw new Error("status present but the leaf is not committed");
    const c = await sha256(concat(b64decode(result.salt), b64decode(result.payload)));
    if (!equal(c, leaf.slice(10))) throw new Error("payload and salt do not open the leaf's commitment");
    step("payload and salt open the leaf's commitment SHA-256(salt || payload)");
    const shown = JSON.parse(new TextDecoder().decode(b64decode(result.payload)));
    if (JSON.stringify(shown) !== JSON.stringify(result.event)) {
      throw new Error("the event shown is not the committed payload");
    }
  } else if (result.status === "inline") {
    step("the payload is the leaf itself");
  } else if (result.status === "erased") {
    const e = result.erasure || {};
    step(`payload erased by ${e.by ?? "?"} (${e.reason ?? "no reason"}), logged as entry ${e.erasure_entry ?? "?"}; the leaf and its proof remain`);
  } else {
    throw new Error(`unknown status ${result.status}`);
  }
}

function setState(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
}

async function getJSON(path, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const resp = await fetch(base + path, { headers });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.reason || `HTTP ${resp.status}`);
  return body;
}

async function loadLog() {
  const info = await getJSON("/");
  $("origin").textContent = info.origin;
  const pinned = localStorage.getItem(`translog.vkey.${info.origin}`);
  $("vkey").value = pinned || info.vkey;
  if (!pinned) localStorage.setItem(`translog.vkey.${info.origin}`, info.vkey);
  $("vkey").addEventListener("change", () => localStorage.setItem(`translog.vkey.${info.origin}`, $("vkey").value.trim()));
  const note = await (await fetch(base + "/checkpoint")).text();
  try {
    const cp = await verifyCheckpoint(note, $("vkey").value);
    $("cp-size").textContent = String(cp.size);
    $("cp-root").textContent = b64encode(cp.root);
    setState($("cp-status"), "verified", "verified (Ed25519, WebCrypto)");
    $("cp-cosigners").textContent = cp.cosigners.length ? cp.cosigners.join(", ") : "none";
  } catch (e) {
    setState($("cp-status"), "failed", `failed: ${e.message}`);
  }
}

let last = null;

function params() {
  const p = new URLSearchParams({ tenant: $("tenant").value.trim(), limit: "50" });
  for (const f of ["actor", "action", "target", "outcome", "category", "from", "to"]) {
    const v = $(f).value.trim();
    if (v) p.set(f, v);
  }
  return p;
}

async function search(cursor) {
  const p = params();
  if (cursor !== undefined) p.set("cursor", String(cursor));
  const token = $("token").value.trim();
  sessionStorage.setItem("translog.token", token);
  $("search-status").textContent = "searching…";
  let answer;
  try {
    answer = await getJSON(`/events/search?${p}`, token);
  } catch (e) {
    $("search-status").textContent = `search failed: ${e.message}`;
    return;
  }
  last = answer;
  const body = $("results").querySelector("tbody");
  if (cursor === undefined) body.textContent = "";
  for (const r of answer.results) body.appendChild(row(r, answer.checkpoint));
  $("search-status").textContent = `${body.children.length} events (checkpoint size ${answer.tree_size})`;
  $("more").hidden = answer.next_cursor === null;
  $("more").onclick = () => search(answer.next_cursor);
}

function row(r, note) {
  const tr = document.createElement("tr");
  tr.dataset.index = String(r.index);
  const ev = r.event || {};
  const cells = [
    r.index,
    new Date(r.timestamp).toISOString(),
    ev.actor ? `${ev.actor.type}:${ev.actor.id}` : "—",
    ev.action || "—",
    ev.outcome ? ev.outcome.result : "—",
    (ev.targets || []).map((t) => `${t.type}:${t.id}`).join(", "),
    r.status,
  ];
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = String(c);
    tr.appendChild(td);
  }
  const td = document.createElement("td");
  const btn = document.createElement("button");
  btn.textContent = "verify";
  btn.className = "verify";
  btn.onclick = () => show(r, note);
  td.appendChild(btn);
  tr.appendChild(td);
  return tr;
}

async function show(result, note) {
  $("detail").hidden = false;
  $("detail-index").textContent = String(result.index);
  $("detail-json").textContent = JSON.stringify(result.event || result.erasure || {}, null, 2);
  const verdict = $("verdict");
  setState(verdict, "pending", "verifying…");
  const checks = [];
  const list = $("checks");
  list.textContent = "";
  try {
    await verifyResult(result, note, $("vkey").value, checks);
    setState(verdict, "verified", `verified: entry ${result.index} is in the signed log`);
  } catch (e) {
    setState(verdict, "failed", `failed: ${e.message}`);
  }
  for (const c of checks) {
    const li = document.createElement("li");
    li.textContent = c;
    list.appendChild(li);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("translog.token") || "";
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  loadLog().catch((e) => setState($("cp-status"), "failed", `failed: ${e.message}`));
});

// for tests and for auditors who want to script the page
window.translogExplorer = { verifyResult, verifyCheckpoint, verifyInclusion, search, show, last: () => last };
