// The page for people (README.md, "The page"). Everything it shows comes from /v1 and
// every change goes through /v1, with the token the person typed (kept in
// sessionStorage: this tab only) or, on a loopback listener without
// API_TOKENS, none. Text from outside (diagnostic codes, alert texts) is
// only ever set as text, never parsed as HTML. Plain DOM and SVG, no library.
"use strict";

const TOKEN_KEY = "bouncer.token";
const SVG_NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 60000;
// A first load answered 503 (the database briefly unavailable: retry) is
// tried again this soon, until the page has loaded once.
const FIRST_LOAD_RETRY_MS = 3000;
const PAGE_SIZE = 50;

const $ = (id) => document.getElementById(id);

const page = { filter: {}, cursor: null, shown: 0, sending: null, timer: null };

// ---- small helpers --------------------------------------------------------

function build(ns, tag, attrs, children) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
const el = (tag, attrs, ...children) => build(null, tag, attrs, children);
const svg = (tag, attrs, ...children) => build(SVG_NS, tag, attrs, children);

/** `2026-11-25T10:00:00.000Z` as `2026-11-25 10:00 UTC`. */
function when(ts) {
  if (!ts) return "—";
  return ts.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
}

/** A fraction (0.05) as a percentage with `digits` decimals. */
function pct(fraction, digits) {
  return fraction === null || fraction === undefined ? "—" : (fraction * 100).toFixed(digits) + "%";
}

const num = (n) => Number(n || 0).toLocaleString("en-US");
const plural = (n, one, many) => `${num(n)} ${n === 1 ? one : many}`;

class Unauthorized extends Error {}

/** One call to /v1: the answer's JSON, or an Error with the server's detail. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401) throw new Unauthorized((data && data.detail) || "a token is required");
  if (!response.ok) {
    throw new Error((data && (data.detail || data.error)) || `HTTP ${response.status}`);
  }
  return data;
}

function fact(list, term, ...value) {
  list.append(el("dt", { text: term }), el("dd", {}, ...value));
}

// ---- loading --------------------------------------------------------------

async function loadAll() {
  try {
    const [sending, history, alerts, subscriptions] = await Promise.all([
      api("GET", "/v1/sending"),
      api("GET", "/v1/rates/history"),
      api("GET", "/v1/alerts?limit=20"),
      api("GET", "/v1/subscriptions"),
    ]);
    showContent();
    page.sending = sending;
    renderSending(sending);
    renderRates(history);
    renderAlerts(alerts.items);
    renderSubscriptions(subscriptions.items);
    renderSes(sending.ses);
    renderBanners(sending, history, subscriptions.items);
    $("load-error").hidden = true;
    $("updated").textContent = "updated " + new Date().toISOString().slice(11, 16) + " UTC";
    return true;
  } catch (error) {
    failed(error);
    return false;
  }
}

function failed(error) {
  if (error instanceof Unauthorized) {
    askForToken(sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : "");
    return;
  }
  $("load-error").textContent = "Could not load: " + error.message;
  $("load-error").hidden = false;
}

function askForToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("content").hidden = true;
  $("token-section").hidden = false;
  $("forget-token").hidden = true;
  $("token-error").textContent = message;
  $("state-badge").textContent = "token needed";
  $("state-badge").className = "badge";
  $("token-input").focus();
}

function showContent() {
  $("token-section").hidden = true;
  $("content").hidden = false;
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

// ---- the sending state ----------------------------------------------------

function renderSending(s) {
  const paused = s.state === "paused";
  const badge = $("state-badge");
  badge.textContent = paused ? "Paused" : s.warned_at ? "Active — warning" : "Active";
  badge.className = "badge " + (paused ? "badge-bad" : s.warned_at ? "badge-warn" : "badge-good");
  const facts = $("sending-facts");
  facts.replaceChildren();
  fact(facts, "State", el("strong", { text: paused ? "paused: do not send" : "active" }));
  fact(facts, "Since", when(s.changed_at));
  fact(facts, "By", s.changed_by);
  fact(facts, "Why", s.reason);
  if (s.warned_at) fact(facts, "Warned", when(s.warned_at));
  // The rates recorded with an automatic pause (a pause by hand keeps the
  // figures of an earlier one: not shown).
  const last = s.at_last_pause || {};
  if (paused && s.changed_by === "bouncer" && last.sends !== null && last.sends !== undefined) {
    fact(
      facts,
      "At the pause",
      `bounce ${pct(last.bounce_rate, 2)} (${plural(last.hard_bounces, "hard bounce", "hard bounces")}), ` +
        `complaint ${pct(last.complaint_rate, 3)} (${plural(last.complaints, "complaint", "complaints")}) ` +
        `over ${plural(last.sends, "send", "sends")}`,
    );
  }
  $("pause-button").hidden = paused;
  $("resume-button").hidden = !paused;
}

function openSendingDialog(state) {
  const resume = state === "active";
  $("sending-dialog-title").textContent = resume ? "Resume sending" : "Pause sending";
  $("sending-dialog-text").textContent = resume
    ? "Resume once the cause is fixed. The rates count afresh from now, so the events behind the last pause do not pause again."
    : "The sender stops at its next check of sending_state; an alert goes out.";
  $("sending-confirm").textContent = resume ? "Resume" : "Pause";
  $("sending-confirm").className = resume ? "primary" : "danger";
  $("sending-form").dataset.state = state;
  $("sending-error").textContent = "";
  $("sending-reason").value = "";
  $("sending-dialog").showModal();
  $("sending-by").focus();
}

async function submitSending(event) {
  event.preventDefault();
  const by = $("sending-by").value.trim();
  const reason = $("sending-reason").value.trim();
  if (!by || !reason) {
    $("sending-error").textContent = "Say who you are and why: both are recorded.";
    return;
  }
  try {
    await api("PUT", "/v1/sending", { state: $("sending-form").dataset.state, by, reason });
    $("sending-dialog").close();
    await loadAll();
  } catch (error) {
    $("sending-error").textContent = error.message;
  }
}

// ---- the rates over time --------------------------------------------------

/** The smallest round number (1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8 times a
 *  power of ten: quarters of it are round too) that is at least `v`. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(v)));
  for (const step of [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10]) if (step * power >= v - 1e-12) return step * power;
  return 10 * power;
}

/** A percentage for an axis or a line: `10%`, `2.5%`, `0.05%`. */
function percentLabel(p) {
  const digits = p >= 10 ? 0 : p >= 1 ? 1 : p >= 0.1 ? 2 : 3;
  let text = p.toFixed(digits);
  if (text.includes(".")) text = text.replace(/0+$/, "").replace(/\.$/, "");
  return text + "%";
}

const LINE_NAMES = {
  warn: "bouncer warns",
  pause: "bouncer pauses",
  "ses-review": "SES review",
  "ses-pause": "SES pause",
};

function drawChart(chart, history, which) {
  const W = 900, H = 260, left = 56, right = 212, top = 14, bottom = 30;
  const rateKey = which + "_rate";
  const countKey = which === "bounce" ? "hard_bounces" : "complaints";
  const countName = which === "bounce" ? "hard bounces" : "complaints";
  const digits = which === "bounce" ? 2 : 3;
  const lines = history.lines[which];
  const thresholds = [
    ["warn", lines.bouncer_warn_percent],
    ["pause", lines.bouncer_pause_percent],
    ["ses-review", lines.ses_review_percent],
    ["ses-pause", lines.ses_pause_percent],
  ].filter(([, value]) => value !== null && value !== undefined);
  const rates = history.hours.map((h) => h.window[rateKey]).filter((r) => r !== null);
  const yMax = niceCeil(Math.max(...thresholds.map(([, v]) => v), ...rates.map((r) => r * 100)) * 1.08);
  const t0 = Date.parse(history.from);
  const t1 = Date.parse(history.to) + 3600e3;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
  const y = (p) => top + (1 - p / yMax) * (H - top - bottom);

  // Keep the chart's <title>, redraw the rest.
  for (const node of [...chart.childNodes]) if (node.nodeName !== "title") node.remove();

  const grid = svg("g", { class: "grid" });
  for (let i = 0; i <= 4; i++) {
    const p = (yMax * i) / 4;
    grid.append(
      svg("line", { x1: left, x2: W - right, y1: y(p), y2: y(p) }),
      svg("text", { x: left - 6, y: y(p) + 4, "text-anchor": "end", text: percentLabel(p) }),
    );
  }
  const days = (t1 - t0) / 86400e3;
  const every = days > 20 ? 7 : days > 6 ? 2 : 1;
  for (let t = Math.ceil(t0 / 86400e3) * 86400e3, n = 0; t <= t1; t += 86400e3, n++) {
    grid.append(svg("line", { class: "day", x1: x(t), x2: x(t), y1: top, y2: H - bottom }));
    if (n % every === 0) {
      grid.append(
        svg("text", { x: x(t), y: H - bottom + 16, "text-anchor": "middle", text: new Date(t).toISOString().slice(5, 10) }),
      );
    }
  }
  chart.append(grid);

  // The lines, labelled at the right; equal values share one label.
  const labels = new Map();
  for (const [name, value] of thresholds) {
    chart.append(
      svg("line", {
        class: "threshold line-" + name,
        "data-line": name,
        "data-percent": value,
        x1: left,
        x2: W - right,
        y1: y(value),
        y2: y(value),
      }),
    );
    const key = String(value);
    labels.set(key, [...(labels.get(key) || []), LINE_NAMES[name]]);
  }
  let lastY = -Infinity;
  for (const [value, names] of [...labels.entries()].sort((a, b) => Number(b[0]) - Number(a[0]))) {
    const at = Math.max(y(Number(value)) + 4, lastY + 13);
    lastY = at;
    chart.append(
      svg("text", { class: "threshold-label", x: W - right + 6, y: at, text: `${names.join(" · ")} ${percentLabel(Number(value))}` }),
    );
  }

  const since = Date.parse(history.counting_since);
  if (since > t0 && since <= t1) {
    chart.append(
      svg("line", { class: "resume", x1: x(since), x2: x(since), y1: top, y2: H - bottom },
        svg("title", { text: "last resume " + when(history.counting_since) })),
    );
  }

  // The rate over the window at the end of each hour; a gap where the
  // window holds no send.
  let d = "";
  let open = false;
  const points = svg("g", { class: "points" });
  const counted = history.hours.filter((h) => h.sends > 0 || h[countKey] > 0).length;
  const radius = counted > 72 ? 1.5 : 3;
  for (const h of history.hours) {
    const rate = h.window[rateKey];
    const end = Date.parse(h.hour) + 3600e3;
    if (rate === null) {
      open = false;
      continue;
    }
    const px = x(end).toFixed(1);
    const py = y(rate * 100).toFixed(1);
    d += (open ? "L" : "M") + px + " " + py;
    open = true;
    if (h.sends > 0 || h[countKey] > 0) {
      points.append(
        svg("circle", { class: "point", cx: px, cy: py, r: radius, "data-hour": h.hour, "data-rate": rate, "data-window-sends": h.window.sends },
          svg("title", {
            text:
              `${when(h.hour)}: ${pct(rate, digits)} over the window of ${plural(h.window.sends, "send", "sends")} ` +
              `(${num(h.window[countKey])} ${countName}); this hour ${plural(h.sends, "send", "sends")}, ${num(h[countKey])} ${countName}`,
          })),
      );
    }
  }
  chart.append(svg("path", { class: "rate", d }), points);

  const now = history.window;
  const pause = lines.bouncer_pause_percent;
  chart.querySelector("title").textContent =
    `${which === "bounce" ? "Bounce" : "Complaint"} rate over the last ${history.policy.max_age_days} days; ` +
    `now ${pct(now[rateKey], digits)} over ${plural(now.sends, "send", "sends")}; bouncer pauses above ${percentLabel(pause)}.`;
}

function renderRates(history) {
  drawChart($("bounce-chart"), history, "bounce");
  drawChart($("complaint-chart"), history, "complaint");
  const w = history.window;
  const p = history.policy;
  $("window-summary").textContent =
    `Now: bounce rate ${pct(w.bounce_rate, 2)}, complaint rate ${pct(w.complaint_rate, 3)}, over the last ` +
    `${plural(w.sends, "send", "sends")}. The window is the most recent ${num(p.window_sends)} sends within ` +
    `${p.max_age_days} days, since the last resume; the lines apply from ${plural(p.min_volume, "send", "sends")}.`;
  const body = $("window-table").tBodies[0];
  body.replaceChildren();
  const row = (name, value) => body.append(el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: value })));
  row("Sends", num(w.sends));
  row("Hard bounces", `${num(w.hard_bounces)} (${pct(w.bounce_rate, 2)})`);
  row("Complaints", `${num(w.complaints)} (${pct(w.complaint_rate, 3)})`);
  row("Reaches back to", when(w.start));
  row("Counting since", history.counting_since.startsWith("1970-") ? "the start" : when(history.counting_since));
  row("Enough volume for the lines", w.enough_volume ? "yes" : `no (fewer than ${num(p.min_volume)} sends)`);
}

// ---- the suppression list -------------------------------------------------

function readFilter() {
  return {
    q: $("search-q").value.trim(),
    reason: $("search-reason").value,
    since: $("search-since").value,
    until: $("search-until").value,
  };
}

async function search(more) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(page.filter)) if (value) params.set(name, value);
  params.set("limit", String(PAGE_SIZE));
  if (more && page.cursor) params.set("cursor", page.cursor);
  const body = $("suppression-table").tBodies[0];
  const status = $("suppression-status");
  try {
    const data = await api("GET", "/v1/suppressions?" + params);
    if (!more) {
      body.replaceChildren();
      page.shown = 0;
    }
    for (const row of data.items) body.append(suppressionRow(row));
    page.shown += data.items.length;
    page.cursor = data.next_cursor;
    $("more-button").hidden = !data.next_cursor;
    status.textContent =
      page.shown === 0 ? "No address matches." : `${plural(page.shown, "address", "addresses")} shown${data.next_cursor ? "" : ", that is all"}.`;
  } catch (error) {
    if (error instanceof Unauthorized) return failed(error);
    status.textContent = "Could not search: " + error.message;
  }
}

function suppressionRow(row) {
  const type = [row.bounce_type, row.bounce_subtype, row.complaint_feedback_type].filter(Boolean).join(" / ");
  const open = el("button", { type: "button", class: "link", "data-email": row.email, text: row.email });
  open.addEventListener("click", () => openRecord(row.email));
  return el(
    "tr",
    { "data-email": row.email },
    el("td", {}, open),
    el("td", { text: row.reason }),
    el("td", { text: type || "—" }),
    el("td", { text: when(row.last_seen_at) }),
    el("td", { class: "number", text: num(row.event_count) }),
    el("td", { class: "source", text: row.source }),
  );
}

async function openRecord(email) {
  const facts = $("record-facts");
  facts.replaceChildren();
  $("remove-error").textContent = "";
  $("remove-reason").value = "";
  $("remove-form").dataset.email = email;
  $("record-title").textContent = email;
  try {
    const { suppression: r } = await api("GET", "/v1/suppressions/" + encodeURIComponent(email));
    fact(facts, "Address", r.email);
    fact(facts, "Reason", r.reason);
    fact(facts, "Bounce type", [r.bounce_type, r.bounce_subtype].filter(Boolean).join(" / ") || "—");
    fact(facts, "Complaint feedback type", r.complaint_feedback_type || "—");
    fact(facts, "Diagnostic code", el("code", { class: "diagnostic", text: r.diagnostic_code || "—" }));
    fact(facts, "First seen", when(r.first_seen_at));
    fact(facts, "Last seen", when(r.last_seen_at));
    fact(facts, "Events", num(r.event_count));
    fact(facts, "Source", r.source);
    fact(facts, "Last SES message id", r.last_ses_message_id || "—");
    fact(facts, "Last SNS message id", r.last_sns_message_id || "—");
    fact(facts, "Note", r.note || "—");
  } catch (error) {
    if (error instanceof Unauthorized) return failed(error);
    fact(facts, "Error", error.message);
  }
  $("record-dialog").showModal();
}

async function submitRemoval(event) {
  event.preventDefault();
  const email = $("remove-form").dataset.email;
  const by = $("remove-by").value.trim();
  const reason = $("remove-reason").value.trim();
  if (!by || !reason) {
    $("remove-error").textContent = "Say who you are and why: both are recorded.";
    return;
  }
  const query = new URLSearchParams({ by, reason });
  try {
    await api("DELETE", `/v1/suppressions/${encodeURIComponent(email)}?${query}`);
    $("record-dialog").close();
    for (const row of $("suppression-table").querySelectorAll("tbody tr")) {
      if (row.dataset.email === email) row.remove();
    }
    $("suppression-status").textContent = `Removed ${email} (recorded: ${by}, “${reason}”).`;
  } catch (error) {
    $("remove-error").textContent = error.message;
  }
}

// ---- alerts, feeds, SES ---------------------------------------------------

function deliveryText(d) {
  if (d.delivered_at) return `${d.channel}: delivered ${when(d.delivered_at)}`;
  if (d.last_error) return `${d.channel}: failing after ${plural(d.attempts, "attempt", "attempts")}, next ${when(d.next_attempt_at)}: ${d.last_error}`;
  return `${d.channel}: pending`;
}

// An alert's text is the webhook's, for Slack and its kin to draw the emoji
// it opens with (":warning: "); here, as in the email, it would be read as
// written.
const plainText = (text) => text.replace(/^:[a-z0-9_+-]+: /, "");

function renderAlerts(items) {
  const body = $("alert-table").tBodies[0];
  body.replaceChildren();
  for (const a of items) {
    const deliveries = a.deliveries.length
      ? el("ul", { class: "deliveries" }, ...a.deliveries.map((d) =>
          el("li", { class: d.delivered_at ? "ok" : d.last_error ? "bad" : "pending", "data-channel": d.channel, text: deliveryText(d) })))
      : el("span", { class: "muted", text: "stored only (no channel has taken it)" });
    body.append(
      el("tr", { "data-alert": a.id },
        el("td", { text: when(a.created_at) }),
        el("td", {}, el("span", { class: "kind kind-" + a.kind, text: a.kind })),
        el("td", {}, el("details", {}, el("summary", { text: a.subject }), el("p", { class: "alert-text", text: plainText(a.text) }))),
        el("td", {}, deliveries)),
    );
  }
  $("alert-status").textContent = items.length ? "" : "No alert yet.";
}

function renderSubscriptions(items) {
  const body = $("subscription-table").tBodies[0];
  body.replaceChildren();
  for (const s of items) {
    body.append(
      el("tr", { "data-topic": s.topic_arn },
        el("td", { class: "source", text: s.topic_arn }),
        el("td", {}, el("span", { class: "kind kind-" + s.state, text: s.state })),
        el("td", { text: when(s.confirmed_at) }),
        el("td", { text: when(s.last_message_at) })),
    );
  }
  $("subscription-status").textContent = items.length ? "" : "No SNS subscription has reached bouncer yet.";
}

function renderSes(ses) {
  const box = $("ses-state");
  box.replaceChildren();
  if (!ses) return;
  const push = ses.push || {};
  if (ses.pause_mode === "off" && !push.enabled && !(push.pending || push.done || push.refused)) {
    box.append(el("p", { class: "muted", text: "bouncer does not act at SES (SES_PAUSE_MODE=off, SES_PUSH_SUPPRESSIONS=false): the sender must read sending_state and the list." }));
  } else {
    const facts = el("dl", { class: "facts" });
    fact(facts, "Pausing at SES", ses.pause_mode);
    fact(
      facts,
      "Suppressions pushed to SES",
      `${push.enabled ? "on" : "off"}: ${num(push.pending)} pending, ${num(push.done)} done, ${num(push.skipped)} skipped, ${num(push.refused)} refused` +
        (push.last_error ? ` (last error ${when(push.last_error_at)} for ${push.last_error_email}: ${push.last_error})` : ""),
    );
    box.append(facts);
    if (ses.targets.length) {
      box.append(
        el("table", { id: "ses-targets" },
          el("thead", {}, el("tr", {}, ...["Target", "bouncer wants", "SES confirmed", "State", "Last error"].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, ...ses.targets.map((t) =>
            el("tr", { "data-target": t.target },
              el("td", { text: t.target }),
              el("td", { text: t.wanted }),
              el("td", { text: t.confirmed ? `${t.confirmed} (${when(t.confirmed_at)})` : "—" }),
              el("td", { text: t.state }),
              el("td", { text: t.last_error ? `${when(t.last_error_at)}: ${t.last_error}` : "—" }))))),
      );
    }
  }
  if (ses.check) {
    const missing = ses.check.missing || [];
    const unchecked = ses.check.unchecked || [];
    const found = [];
    if (missing.length) found.push("missing " + missing.join(", "));
    if (unchecked.length) found.push("could not check " + unchecked.join(", ") + " (bouncer ses check says why)");
    box.append(el("p", { text: `Permissions checked ${when(ses.check.checked_at)}: ${found.length ? found.join("; ") : "all allowed"}.` }));
  }
}

function renderBanners(sending, history, subscriptions) {
  const banners = $("banners");
  banners.replaceChildren();
  const banner = (kind, id, text) => banners.append(el("p", { class: "banner banner-" + kind, role: "alert", "data-banner": id, text }));
  if (sending.state === "paused") {
    banner("bad", "paused", `Sending is paused since ${when(sending.changed_at)} by ${sending.changed_by}: ${sending.reason}`);
  } else if (sending.warned_at) {
    banner("warn", "warning", `Warning since ${when(sending.warned_at)}: a rate passed bouncer's warning line. Sending pauses at the pause line.`);
  }
  for (const s of subscriptions.filter((s) => s.state === "unsubscribed")) {
    banner("bad", "unsubscribed",
      `The feed from ${s.topic_arn} stopped at ${when(s.unsubscribed_at)} (unsubscribed): bouncer receives no bounces or complaints from it, and the rates no longer see them. Subscribe the endpoint to the topic again.`);
  }
  for (const t of (sending.ses && sending.ses.targets) || []) {
    if (t.state === "pending" && t.last_error) {
      banner("bad", "ses", `SES has not taken the ${t.wanted === "disabled" ? "pause" : "resume"} at ${t.target}: ${t.last_error}`);
    }
  }
  if (history.window.sends > 0 && !history.window.volume_known) {
    banner("warn", "volume", "No Delivery or Send events in the window: the rates count only what bounced, and the guard does not act. Publish deliveries (or Send events) to the topic.");
  }
}

// ---- wiring ---------------------------------------------------------------

function start() {
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    if (await loadAll()) search(false);
  });
  $("forget-token").addEventListener("click", () => askForToken("Token forgotten."));
  $("refresh").addEventListener("click", async () => {
    if (await loadAll()) search(false);
  });
  $("pause-button").addEventListener("click", () => openSendingDialog("paused"));
  $("resume-button").addEventListener("click", () => openSendingDialog("active"));
  $("sending-form").addEventListener("submit", submitSending);
  $("remove-form").addEventListener("submit", submitRemoval);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    page.filter = readFilter();
    search(false);
  });
  $("more-button").addEventListener("click", () => search(true));
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  page.timer = setInterval(() => {
    if (!document.hidden && !$("content").hidden) loadAll();
  }, REFRESH_MS);
  firstLoad();
}

// Until the page has loaded once, the minute's refresh does not run (there
// is nothing shown to refresh): a failed first load tries again soon,
// unless it asked for a token.
async function firstLoad() {
  if (await loadAll()) {
    search(false);
  } else if ($("token-section").hidden) {
    setTimeout(firstLoad, FIRST_LOAD_RETRY_MS);
  }
}

document.addEventListener("DOMContentLoaded", start);
