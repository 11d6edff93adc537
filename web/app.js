// The multiviewer page: sign in with a token (kept in this tab's session
// storage, sent as a header, never in a URL), then draw every board the
// daemon pushes. Built with the DOM only (text, never markup, from the
// daemon), so nothing it shows can run as code.
"use strict";

const KEY = "simulcast-token";
const SPARK = 600; // bitrate samples kept per leg: 5 minutes at 2 a second
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const tiles = new Map(); // leg id -> { root, fields, rates }
let stream = null;
let auth = null;
let eventId = null;

// Master control's buttons (built for operators and admins only); those
// that change what partners see ask first.
const ACTIONS = [
  ["arm", "Arm", null],
  ["take", "Take", "Take: the programme goes to every partner now."],
  ["hold", "Hold", "Hold: partners stay on the slate past T0 until Take."],
  ["extend", "Extend +5 min", "Extend the event by 5 minutes?"],
  ["end", "End", "End: partners go to the post-roll slate now."],
  ["abort", "Abort", "ABORT: the emergency slate, then every leg stops."],
];
const SOURCES = ["AUTO", "PRIMARY", "BACKUP", "SLATE"];

function controls() {
  const box = $("controls");
  box.replaceChildren();
  const acts = el("div", "group");
  for (const [action, label, ask] of ACTIONS) {
    const b = el("button", "", label);
    b.type = "button";
    b.disabled = !eventId;
    b.dataset.action = action;
    b.addEventListener("click", () => act({ action, by_s: action === "extend" ? 300 : undefined }, ask));
    acts.append(b);
  }
  const src = el("div", "group");
  src.append(el("small", "", "Source"));
  for (const source of SOURCES) {
    const b = el("button", "", source[0] + source.slice(1).toLowerCase());
    b.type = "button";
    b.disabled = !eventId;
    b.dataset.action = `source-${source}`;
    b.addEventListener("click", () => act({ action: "source", source }, `Switch every partner to ${source}?`));
    src.append(b);
  }
  box.append(acts, src, el("span", "", ""));
  box.lastChild.id = "action-result";
  box.hidden = false;
}

// Asks `text` in a modal; the answer comes from this question's own
// buttons (not the dialog's close event, which arrives later and could be
// taken for the next question's answer).
function confirmed(text) {
  if (!text) return Promise.resolve(true);
  const d = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((done) => {
    const answer = (yes) => () => {
      $("confirm-yes").onclick = null;
      $("confirm-no").onclick = null;
      d.oncancel = null;
      d.close();
      done(yes);
    };
    $("confirm-yes").onclick = answer(true);
    $("confirm-no").onclick = answer(false);
    d.oncancel = answer(false); // Escape
    d.showModal();
  });
}

async function act(what, ask) {
  const out = $("action-result");
  if (!eventId) {
    out.textContent = "No event to act on.";
    return;
  }
  if (!(await confirmed(ask))) return;
  out.className = "";
  out.textContent = `${what.action}…`;
  const r = await fetch("/api/web/action", {
    method: "POST",
    headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify({ event_id: eventId, ...what }),
    cache: "no-store",
  });
  const text = await r.text();
  if (r.ok) {
    out.textContent = `${what.action}: ${JSON.parse(text).state}`;
  } else {
    out.className = "refused";
    out.textContent = `${what.action} refused: ${text.trim()}`;
  }
}

function two(n) { return String(Math.floor(n)).padStart(2, "0"); }
function hms(s) { return `${two(s / 3600)}:${two((s / 60) % 60)}:${two(s % 60)}`; }

function signIn(error) {
  $("board").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = error || "";
  $("token").focus();
}

async function start(token) {
  auth = { authorization: `Bearer ${token}` };
  let r;
  try {
    r = await fetch("/api/web/whoami", { headers: auth, cache: "no-store" });
  } catch (e) {
    return signIn(`The daemon cannot be reached: ${e.message}`);
  }
  if (!r.ok) {
    sessionStorage.removeItem(KEY);
    return signIn(`Refused: ${(await r.text()).trim()}`);
  }
  const me = await r.json();
  $("who").textContent = `${me.name} (${me.role})`;
  if (me.role === "operator" || me.role === "admin") controls();
  else $("controls").replaceChildren();
  $("signin").hidden = true;
  $("board").hidden = false;
  follow(auth, 0);
}

// Reads the pushed boards; on a break, connects again (1 s, then up to 5 s).
async function follow(auth, failures) {
  const ctl = new AbortController();
  stream = ctl;
  try {
    const r = await fetch("/api/web/status", { headers: auth, cache: "no-store", signal: ctl.signal });
    if (r.status === 401) return signIn("The token is no longer valid.");
    if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
    $("conn").textContent = "live";
    failures = 0;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data) draw(JSON.parse(data));
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (stream !== ctl) return;
  $("conn").textContent = "connection lost: connecting again";
  setTimeout(() => follow(auth, failures + 1), Math.min(1000 * (failures + 1), 5000));
}

// Cluster mode: a follower's board is empty; it says where master control runs.
function drawCluster(c) {
  const box = $("follower");
  box.hidden = !c || c.leads;
  if (box.hidden) return;
  const leader = c.leader ? `node ${c.leader}` : "no node yet (an election is under way)";
  box.replaceChildren(`This node (${c.node}) follows: master control and the legs run on ${leader}. `);
  if (c.leader_page) {
    const a = document.createElement("a");
    a.href = c.leader_page;
    a.textContent = "Open its page";
    box.append(a);
  }
}

function draw(b) {
  drawCluster(b.cluster);
  $("utc").textContent = b.utc;
  $("health").textContent = b.healthy ? "" : "· relay unhealthy";
  const e = b.event;
  eventId = e ? e.id : null;
  for (const button of document.querySelectorAll("#controls button")) button.disabled = !eventId;
  $("event-title").textContent = e ? e.title : "No event scheduled";
  $("event-state").textContent = e ? e.state : "";
  $("event-state").className = `badge ${e ? e.state : ""}`;
  $("event-t0").textContent = e ? `T0 ${e.t0_utc} · end ${e.end_utc} · ${e.id}` : "";
  if (e && e.on_air_s !== null && e.on_air_s !== undefined) {
    $("countdown-label").textContent = "On air";
    $("countdown").textContent = hms(e.on_air_s);
  } else if (e && e.to_t0_s !== null && e.to_t0_s !== undefined) {
    $("countdown-label").textContent = "To T0";
    $("countdown").textContent = `-${hms(Math.ceil(e.to_t0_s))}`;
  } else {
    $("countdown-label").textContent = "T0";
    $("countdown").textContent = "--";
  }
  drawFeeds(b.live);
  drawLegs(b.live ? b.live.legs : []);
  logs(b);
}

// The as-run tail and the alerts, read again only when the board says
// they changed (or the event did).
const seen = { asrun: null, alerts: null };
async function logs(b) {
  const asrunKey = `${eventId}:${b.asrun_seq}`;
  if (eventId && seen.asrun !== asrunKey) {
    seen.asrun = asrunKey;
    const r = await fetch(`/api/web/asrun?event=${encodeURIComponent(eventId)}`, { headers: auth, cache: "no-store" });
    if (r.ok) {
      const entries = await r.json();
      list($("asrun"), entries, (e) => [e.utc.slice(11, 19), e.kind, `${e.channel_id ? e.channel_id + ": " : ""}${e.detail} (${e.actor})`, ""]);
      proofs(entries);
    }
  }
  if (seen.alerts !== b.alerts_seq) {
    seen.alerts = b.alerts_seq;
    const r = await fetch("/api/web/alerts", { headers: auth, cache: "no-store" });
    if (r.ok) list($("alerts"), await r.json(), (a) => [a.raised_at.slice(11, 19), a.severity, a.summary, a.severity]);
  }
}

// The visual as-run: an entry with a picture (what partners got at its
// instant) shows it small, with a link to download it. Pictures are
// fetched once each; those no longer listed are let go.
const proofUrls = new Map(); // picture id -> object URL
async function proofs(entries) {
  const items = $("asrun").children;
  const wanted = new Set(entries.filter((e) => e.picture).map((e) => e.picture));
  for (const [id, url] of proofUrls) {
    if (!wanted.has(id)) {
      URL.revokeObjectURL(url);
      proofUrls.delete(id);
    }
  }
  for (let i = 0; i < entries.length; i++) {
    const id = entries[i].picture;
    if (!id) continue;
    if (!proofUrls.has(id)) {
      const r = await fetch(`/api/web/picture/${id}`, { headers: auth, cache: "no-store" });
      if (!r.ok) continue;
      proofUrls.set(id, URL.createObjectURL(await r.blob()));
    }
    const li = items[i];
    if (!li || li.querySelector("img")) continue;
    const img = el("img", "proof");
    img.src = proofUrls.get(id);
    img.alt = `what partners got at ${entries[i].utc}`;
    img.dataset.picture = id;
    const a = el("a", "download", "download");
    a.href = proofUrls.get(id);
    a.download = `${eventId}-${id}.jpg`;
    li.querySelector(".what").append(el("br"), img, a);
  }
}

function list(ol, items, row) {
  ol.replaceChildren(...items.map((item) => {
    const [when, kind, what, cls] = row(item);
    const li = el("li", cls);
    li.append(el("span", "when", when), el("span", "kind", kind), el("span", "what", what));
    return li;
  }));
}

// The picture row: the programme as partners get it, the feeds and the
// slate, each with its latest thumbnail (fetched when its number changes;
// the previous picture's object URL is let go, so a page open all night
// holds four pictures, not thousands).
const CARDS = [["program", "Programme"], ["primary", "Primary"], ["backup", "Backup"], ["slate", "Slate"]];
const cards = new Map(); // name -> { root, img, status, detail, seq, url, loading }

function card(name, label) {
  let c = cards.get(name);
  if (c) return c;
  const root = el("figure", "feed");
  root.dataset.feed = name;
  const img = el("img");
  img.alt = `${label}: no picture yet`;
  img.width = 320;
  img.height = 180;
  const caption = el("figcaption");
  const status = el("div", "sub");
  const detail = el("div", "sub");
  caption.append(el("b", "", label), status, detail);
  root.append(img, caption);
  c = { root, img, status, detail, seq: 0, url: null, loading: false };
  cards.set(name, c);
  return c;
}

// One bar per audio track: RMS as the bar, peak as a tick, -60 to 0 dBFS;
// the language and the RMS figure beside it.
function meters(c, tracks) {
  if (!c.meters) {
    c.meters = el("div", "meters");
    c.root.insertBefore(c.meters, c.root.querySelector("figcaption"));
  }
  while (c.meters.children.length > tracks.length) c.meters.lastChild.remove();
  tracks.forEach((t, i) => {
    let row = c.meters.children[i];
    if (!row) {
      row = el("div", "meter");
      row.append(el("span", "lang"), el("span", "bar"), el("span", "db"));
      row.children[1].append(el("span", "rms"), el("span", "peak"));
      c.meters.append(row);
    }
    const pos = (db) => (db === null || db === undefined ? 0 : Math.max(0, Math.min(100, ((db + 60) / 60) * 100)));
    row.dataset.rms = t.rms_db === null ? "" : t.rms_db;
    row.children[0].textContent = t.language || `${i + 1}`;
    row.children[1].children[0].style.width = `${pos(t.rms_db)}%`;
    row.children[1].children[1].style.left = `${pos(t.peak_db)}%`;
    row.children[2].textContent = t.rms_db === null ? "--" : `${t.rms_db.toFixed(0)} dB`;
  });
}

async function picture(c, name, seq) {
  if (!seq || seq === c.seq || c.loading || !auth) return;
  c.loading = true;
  try {
    const r = await fetch(`/api/web/thumb/${name}`, { headers: auth, cache: "no-store" });
    if (r.ok) {
      const url = URL.createObjectURL(await r.blob());
      c.img.src = url;
      if (c.url) URL.revokeObjectURL(c.url);
      c.url = url;
      c.seq = seq;
    }
  } finally {
    c.loading = false;
  }
}

function drawFeeds(live) {
  const box = $("feeds");
  if (!live) {
    box.replaceChildren();
    for (const c of cards.values()) if (c.url) URL.revokeObjectURL(c.url);
    cards.clear();
    return;
  }
  const on = live.source_in_use;
  const thumbs = live.thumbs || {};
  const feeds = { primary: live.source, backup: live.backup };
  for (const [name, label] of CARDS) {
    if (name === "backup" && !live.backup) continue;
    const c = card(name, label);
    const f = feeds[name];
    const onAir = on === name.toUpperCase();
    c.root.className = `feed ${f ? f.state : ""}${onAir ? " on" : ""}`;
    if (name === "program") {
      c.status.textContent = `${live.program}`;
      c.detail.textContent = `source ${live.source_choice} · on air: ${on}`;
    } else if (name === "slate") {
      c.status.textContent = onAir ? "on air" : "ready";
      c.detail.textContent = "";
    } else {
      c.status.textContent = `${f.state}${f.healthy ? "" : " · unhealthy"}${onAir ? " · on air" : ""}`;
      c.detail.textContent = f.last_error || f.describe;
    }
    meters(c, (live.levels || {})[name] || []);
    const t = thumbs[name];
    c.root.dataset.luma = t ? t.luma : "";
    c.root.classList.toggle("stale", !!t && t.age_s > 5);
    picture(c, name, t && t.seq);
    if (c.root.parentNode !== box) box.append(c.root);
  }
}

function tile(id) {
  let t = tiles.get(id);
  if (t) return t;
  const root = el("article", "leg");
  root.dataset.leg = id;
  const f = {};
  const head = el("h2");
  f.state = el("span", "state");
  f.name = el("span", "name");
  head.append(f.state, f.name);
  const place = el("div", "sub");
  f.place = place;
  const dl = el("dl");
  for (const [key, label] of [["localNow", "Local now"], ["localAir", "Air time"], ["rate", "Bitrate"],
    ["health", "Reconnects"], ["srt", "SRT"], ["audio", "Audio"]]) {
    f[key] = el("dd", key === "localNow" ? "local-now" : key === "localAir" ? "local-air" : "");
    dl.append(el("dt", "", label), f[key]);
  }
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${SPARK} 32`);
  svg.setAttribute("preserveAspectRatio", "none");
  f.line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  svg.append(f.line);
  f.error = el("div", "error");
  root.append(head, place, dl, svg, f.error);
  t = { root, f, rates: [] };
  tiles.set(id, t);
  return t;
}

function drawLegs(legs) {
  const box = $("legs");
  const seen = new Set();
  for (const l of legs) {
    seen.add(l.id);
    const t = tile(l.id);
    const f = t.f;
    t.root.className = `leg ${l.state}`;
    f.state.textContent = l.state;
    f.name.textContent = l.name || l.id;
    f.place.textContent = `${l.country} · ${l.protocol.toUpperCase()} · ${l.zone} · ${l.id}`;
    f.localNow.textContent = l.local_now;
    f.localAir.textContent = l.local_air ? `${l.local_air}${l.delayed ? " (delayed)" : ""}` : "--";
    f.rate.textContent = `${l.bitrate_kbps} kbit/s`;
    f.health.textContent = `${l.reconnects} · drops ${l.drops}`;
    f.srt.textContent = l.rtt_ms === null ? "--" : `RTT ${l.rtt_ms} ms · lost ${l.lost}`;
    f.audio.textContent = l.audio.length ? l.audio.join(", ") : "all tracks";
    f.error.textContent = l.last_error || "";
    t.rates.push(l.bitrate_kbps);
    if (t.rates.length > SPARK) t.rates.shift();
    const top = Math.max(1, ...t.rates);
    f.line.setAttribute("points", t.rates.map((r, i) => `${i + SPARK - t.rates.length},${31 - (30 * r) / top}`).join(" "));
    if (t.root.parentNode !== box) box.append(t.root);
  }
  for (const [id, t] of tiles) {
    if (!seen.has(id)) {
      t.root.remove();
      tiles.delete(id);
    }
  }
}

$("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem(KEY, token);
  start(token);
});
$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  if (stream) stream.abort();
  stream = null;
  auth = null;
  $("controls").replaceChildren();
  $("controls").hidden = true;
  eventId = null;
  seen.asrun = null;
  seen.alerts = null;
  signIn("");
});
const saved = sessionStorage.getItem(KEY);
if (saved) start(saved); else signIn("");
