"use strict";
// The infrahaus dashboard page: the Container table (polled) and, for the
// Container picked, its progress events over Server-Sent Events. Text from
// events is only ever set as textContent, never parsed as HTML.

const POLL_MS = 2000;
const REOPEN_MS = 2000;
const TOKEN_COOKIE = "infrahaus_token";

const page = {
  namespace: new URLSearchParams(location.search).get("namespace") || "default",
  selected: new URLSearchParams(location.search).get("container"),
  // The Container named in the URL is opened once it shows up in the list.
  openFromUrl: true,
  source: null,
  lastId: null,
  runEnded: false,
  reopenTimer: null,
};

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setUrl() {
  const query = new URLSearchParams({ namespace: page.namespace });
  if (page.selected) query.set("container", page.selected);
  history.replaceState(null, "", `?${query}`);
}

// ---- the Container table ----

async function refreshList() {
  let response;
  try {
    response = await fetch(`/api/v1/containers?namespace=${encodeURIComponent(page.namespace)}`, {
      credentials: "same-origin",
    });
  } catch (error) {
    $("list-state").textContent = "dashboard unreachable, retrying";
    return;
  }
  if (response.status === 401) {
    showLogin(true);
    return;
  }
  showLogin(false);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    showNotice(body.error || `the dashboard answered ${response.status}`);
    renderRows([]);
    return;
  }
  showNotice(null);
  const body = await response.json();
  renderRows(body.items);
  $("list-state").textContent = `updated ${new Date().toLocaleTimeString()}`;
  if (page.openFromUrl && page.selected && body.items.some((ct) => ct.name === page.selected)) {
    select(page.selected);
  }
}

// Rows are kept per Container and refilled in place, so a row being
// clicked or hovered is never swapped out under the pointer.
function renderRows(items) {
  const tbody = $("containers").tBodies[0];
  const existing = new Map([...tbody.rows].map((tr) => [tr.dataset.name, tr]));
  const rows = items.map((ct) => {
    const tr = existing.get(ct.name) || newRow(ct.name);
    fillRow(tr, ct);
    return tr;
  });
  tbody.replaceChildren(...rows);
  $("empty").hidden = items.length > 0;
}

function newRow(name) {
  const tr = element("tr");
  tr.dataset.name = name;
  tr.addEventListener("click", () => select(name));
  return tr;
}

function fillRow(tr, ct) {
  tr.classList.toggle("selected", ct.name === page.selected);
  tr.classList.toggle("ready", ct.phase === "Ready");
  tr.classList.toggle("failed", ct.phase === "Error");
  const message = element("td", "message", ct.message ?? "");
  message.title = ct.message ?? "";
  tr.replaceChildren(
    element("td", "name", ct.name),
    element("td", `phase phase-${ct.phase}`, ct.phase),
    progressCell(ct.progress ?? 0),
    element("td", "vmid", ct.vmid ?? ""),
    element("td", "node", ct.node ?? ""),
    element("td", "ip", ct.ipAddress ?? ""),
    message,
  );
}

function progressCell(percent) {
  const td = element("td", "progress");
  const bar = element("span", "bar");
  const fill = element("span");
  fill.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  bar.append(fill);
  td.append(bar, element("span", "percent", `${percent}%`));
  return td;
}

// Moves the selected row's bar as events arrive, between two polls.
function showProgress(name, percent) {
  const tr = document.querySelector(`tr[data-name="${CSS.escape(name)}"]`);
  if (tr) tr.querySelector(".progress").replaceWith(progressCell(percent));
}

// ---- the event log of one Container ----

function select(name) {
  page.openFromUrl = false;
  closeStream();
  page.selected = name;
  page.lastId = null;
  page.runEnded = false;
  setUrl();
  for (const tr of document.querySelectorAll("tr[data-name]")) {
    tr.classList.toggle("selected", tr.dataset.name === name);
  }
  $("detail").hidden = false;
  $("detail-name").textContent = name;
  $("log").replaceChildren();
  openStream();
}

function closeStream() {
  clearTimeout(page.reopenTimer);
  if (page.source) page.source.close();
  page.source = null;
}

function streamUrl() {
  const base = `/api/v1/namespaces/${encodeURIComponent(page.namespace)}/containers/${encodeURIComponent(page.selected)}/events`;
  return page.lastId ? `${base}?lastEventId=${encodeURIComponent(page.lastId)}` : base;
}

// EventSource reconnects by itself after a dropped connection, sending
// Last-Event-ID. After an error answer it gives up; then a new one is
// opened here, naming the last event seen in the query.
function openStream() {
  const source = new EventSource(streamUrl());
  page.source = source;
  source.onopen = () => setStreamState("live");
  source.onmessage = (message) => {
    page.lastId = message.lastEventId || page.lastId;
    appendEvent(message.lastEventId, JSON.parse(message.data));
  };
  source.onerror = () => {
    setStreamState("reconnecting");
    if (source.readyState === EventSource.CLOSED && page.source === source) {
      page.source = null;
      page.reopenTimer = setTimeout(() => {
        if (!page.source && page.selected) openStream();
      }, REOPEN_MS);
    }
  };
}

function setStreamState(text) {
  const badge = $("stream-state");
  badge.textContent = text;
  badge.className = `badge ${text}`;
}

function appendEvent(id, event) {
  const log = $("log");
  if (page.runEnded) log.append(element("li", "run-separator", "a new run"));
  page.runEnded = event.type === "complete" || event.type === "error";
  const li = element("li", `event event-${event.type}`);
  li.dataset.id = id;
  if (event.type === "log") li.classList.add(`stream-${event.stream}`);
  li.append(
    element("span", "time", `${(event.timestamp || "").slice(11, 19)} `),
    element("span", "pct", `${String(event.percent).padStart(3)}% `),
    element("span", "step", event.type === "complete" ? "complete" : event.step),
    element("span", "text", eventText(event)),
  );
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
  showProgress(event.container?.name ?? page.selected, event.percent);
}

function eventText(event) {
  switch (event.type) {
    case "log":
      return event.stream === "stderr"
        ? `${event.script} (stderr): ${event.message}`
        : `${event.script}: ${event.message}`;
    case "error":
      // The controller's message usually names the failed stage already.
      return event.message.startsWith(`${event.step} failed`)
        ? event.message
        : `${event.step} failed: ${event.message}`;
    default:
      return event.message;
  }
}

// ---- signing in ----

function showLogin(shown) {
  $("login").hidden = !shown;
  $("sign-out").hidden = shown;
  if (shown) $("list-state").textContent = "not signed in";
}

function showNotice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

function setToken(token, maxAge) {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${TOKEN_COOKIE}=${token}; path=/; SameSite=Strict; max-age=${maxAge}${secure}`;
}

$("login-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  setToken(token, 12 * 3600);
  $("token").value = "";
  refreshList();
  if (page.selected) select(page.selected);
});

$("sign-out").addEventListener("click", () => {
  setToken("", 0);
  closeStream();
  renderRows([]);
  refreshList();
});

$("namespace-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  page.namespace = $("namespace").value.trim() || "default";
  closeStream();
  page.selected = null;
  $("detail").hidden = true;
  setUrl();
  refreshList();
});

$("namespace").value = page.namespace;
refreshList();
setInterval(refreshList, POLL_MS);
