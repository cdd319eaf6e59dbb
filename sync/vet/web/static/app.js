// vet serve: the page. Plain JS, no build. Everything the defender gave (names,
// answers' metadata) is untrusted text: it only ever goes into textContent/value.
"use strict";

const $ = (sel) => document.querySelector(sel);
let info = null;
let current = null; // the open submission's detail

function status(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json", ...(options.headers || {}) };
    init.body = JSON.stringify(options.json);
  }
  const reply = await fetch(path, init);
  let body = null;
  if (reply.status !== 204) {
    body = await reply.json().catch(() => null);
  }
  if (!reply.ok) {
    const err = new Error((body && body.detail) || `HTTP ${reply.status}`);
    err.status = reply.status;
    err.code = body && body.error;
    throw err;
  }
  return body;
}

async function login() {
  // The token arrives in the fragment (never sent to the server by the browser);
  // trade it for an HttpOnly SameSite=Strict cookie, then drop it from the address bar.
  const match = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  await api("/api/session", { method: "POST",
                              headers: { Authorization: `Bearer ${match[1]}` } });
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 16) + "Z";
}

async function loadQueue() {
  const params = new URLSearchParams();
  const state = $("#filter-state").value;
  if (state) params.set("state", state);
  params.set("pulled", $("#filter-pulled").value);
  const data = await api("/api/queue?" + params);
  const tbody = $("#queue tbody");
  tbody.replaceChildren();
  for (const s of data.submissions) {
    const tr = el("tr");
    tr.dataset.id = s.id;
    tr.dataset.state = s.state;
    if (current && current.id === s.id) tr.classList.add("selected");
    const idCell = el("td");
    idCell.append(el("code", s.id));
    tr.append(idCell, el("td", s.state, `state state-${s.state}`),
              el("td", s.story_id || s.reason || ""), el("td", fmtTime(s.received_at)),
              el("td", s.pulled ? "yes" : "no"));
    tr.addEventListener("click", () => openSubmission(s.id));
    tbody.append(tr);
  }
  $("#queue-empty").hidden = data.submissions.length > 0;
  const qerr = $("#queue-error");
  qerr.hidden = !data.error;
  qerr.textContent = data.error ? `Service not reachable (${data.error}): showing the last`
    + " queue this workstation saw." : "";
}

function fillReasons() {
  const decision = document.querySelector("input[name=decision]:checked").value;
  const list = decision === "reject" ? info.reject_reasons : info.approve_reasons;
  const select = $("#reason");
  select.replaceChildren(...list.map((r) => {
    const o = el("option", r.replaceAll("_", " "));
    o.value = r;
    return o;
  }));
}

const SUMMARY_KEYS = ["display_name", "country", "region", "language", "themes", "contact",
                      "consent", "prompt_set"];

async function openSubmission(id) {
  status("Decrypting on this workstation…");
  let detail;
  try {
    detail = await api(`/api/submissions/${encodeURIComponent(id)}`);
  } catch (err) {
    status(err.code === "not_pulled" ? "Pull this submission first (Pull new)."
      : `Cannot open: ${err.message}`, true);
    return;
  }
  current = detail;
  for (const tr of document.querySelectorAll("#queue tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.id === id);
  }
  $("#detail").hidden = false;
  $("#detail-id").textContent = detail.id;
  $("#detail-state").textContent = detail.state || "unknown";
  $("#detail-state").className = `state state-${detail.state}`;
  $("#detail-extra").textContent = [detail.reason && `reason: ${detail.reason}`,
    detail.story_id && `story: ${detail.story_id}`, detail.note && `note: ${detail.note}`]
    .filter(Boolean).join(" · ");

  const m = detail.manifest || {};
  const dl = $("#manifest-summary");
  dl.replaceChildren();
  for (const key of SUMMARY_KEYS) {
    if (m[key] === undefined || m[key] === null) continue;
    const value = typeof m[key] === "object" ? JSON.stringify(m[key]) : m[key];
    dl.append(el("dt", key.replaceAll("_", " ")), el("dd", value));
  }
  $("#manifest-json").textContent = JSON.stringify(m, null, 2);

  const parts = $("#parts");
  parts.replaceChildren();
  const trims = $("#trims");
  trims.replaceChildren(el("legend", "Trim per answer (seconds; end 0 = to the end)"));
  detail.audio.forEach((a, index) => {
    const li = el("li");
    const label = [a.prompt_id || a.name, a.duration_s ? `${a.duration_s.toFixed(1)} s` : ""]
      .filter(Boolean).join(" · ");
    li.append(el("span", label));
    const audio = el("audio", null, "part-audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.dataset.part = a.file;
    audio.src = `/api/submissions/${encodeURIComponent(detail.id)}/audio/`
      + encodeURIComponent(a.file);
    li.append(audio);
    parts.append(li);

    const row = el("div", null, "row");
    row.append(el("span", `${index + 1}. ${a.prompt_id || a.name}`));
    for (const which of ["start", "end"]) {
      const label2 = el("label", `${which} `);
      const input = el("input");
      input.type = "number"; input.min = "0"; input.step = "0.1"; input.value = "0";
      input.dataset.part = String(index); input.dataset.which = which;
      input.className = `trim-${which}`;
      label2.append(input);
      row.append(label2);
    }
    trims.append(row);
  });

  // The defender's consent decides whether a name may be shown at all.
  const consent = (m.consent && typeof m.consent === "object") ? m.consent : {};
  const mayName = consent.show_name === true && m.anonymous !== true;
  $("#display-name").value = mayName && m.display_name && m.display_name !== "Anonymous"
    ? m.display_name : "";
  $("#anonymous").checked = !mayName || !$("#display-name").value;
  $("#anonymous").disabled = !mayName;
  $("#display-name").disabled = $("#anonymous").checked;
  $("#title").value = "";
  $("#disguise").checked = false;
  $("#preview").removeAttribute("src");
  document.querySelector("input[name=decision][value=approve]").checked = true;
  fillReasons();
  $("#note").value = "";
  applyState(detail.state);
  status(`Opened ${detail.id}: ${detail.audio.length} answer(s).`);
}

// What the state allows (the service enforces it too; this only spares a refusal).
const DECIDABLE = ["received", "in_review", "approved"];
const PUBLISHABLE = ["received", "in_review", "approved", "unpublished"];

function applyState(state) {
  const decidable = DECIDABLE.includes(state);
  for (const node of document.querySelectorAll("#decision-form input, #decision-form select,"
                                                + " #decision-form textarea, #decide")) {
    node.disabled = !decidable;
  }
  $("#publish").disabled = !info.can_publish || !PUBLISHABLE.includes(state);
  $("#preview-btn").disabled = !info.can_preview;
  const hint = state === "withdrawn" ? "Withdrawn by the defender: never publish this."
    : !decidable && !PUBLISHABLE.includes(state) ? `This submission is ${state}.` : "";
  $("#detail-extra").dataset.hint = hint;
  if (hint) $("#detail-extra").textContent += ` · ${hint}`;
}

function trimsOf() {
  const out = [];
  for (const row of document.querySelectorAll("#trims .row")) {
    const start = row.querySelector(".trim-start");
    const end = row.querySelector(".trim-end");
    const s = parseFloat(start.value) || 0;
    const e = parseFloat(end.value) || 0;
    if (s || e) out.push({ part: Number(start.dataset.part), start: s, end: e });
  }
  return out;
}

async function decide(event) {
  event.preventDefault();
  if (!current) return;
  const form = new FormData($("#decision-form"));
  const body = { decision: form.get("decision"), reason: form.get("reason") || null,
                 note: form.get("note") || null };
  try {
    const result = await api(`/api/submissions/${encodeURIComponent(current.id)}/decision`,
                             { json: body });
    status(`Recorded: ${current.id} is ${result.state}`
           + (result.reason ? ` (${result.reason})` : "") + ".");
    $("#note").value = "";
  } catch (err) {
    status(`Decision refused: ${err.message}`, true);
  }
  await refreshAll();
}

function preview() {
  if (!current) return;
  const params = new URLSearchParams();
  for (const t of trimsOf()) params.append("trim", `${t.part}:${t.start}-${t.end}`);
  if ($("#disguise").checked) params.set("disguise", "true");
  const audio = $("#preview");
  status("Preparing the preview (in memory)…");
  audio.src = `/api/submissions/${encodeURIComponent(current.id)}/preview?${params}`;
  audio.addEventListener("canplay", () => status("Preview ready."), { once: true });
  audio.addEventListener("error", () => status("The preview failed.", true), { once: true });
  audio.play().catch(() => {});
}

async function publish(event) {
  event.preventDefault();
  if (!current) return;
  const anonymous = $("#anonymous").checked;
  const body = { title: $("#title").value || null,
                 display_name: anonymous ? null : ($("#display-name").value || null),
                 anonymous, trims: trimsOf(), disguise: $("#disguise").checked };
  $("#publish").disabled = true;
  status("Publishing: preparing the audio, signing the catalog, uploading…");
  try {
    const result = await api(`/api/submissions/${encodeURIComponent(current.id)}/publish`,
                             { json: body });
    status(`Published ${result.story_id || ""}`
           + (result.catalog_version ? ` in catalog version ${result.catalog_version}` : "")
           + ".");
  } catch (err) {
    status(`Publishing failed: ${err.message}`, true);
  } finally {
    $("#publish").disabled = !info.can_publish;  // refreshAll applies the new state
  }
  await refreshAll();
}

async function refreshAll() {
  try {
    await loadQueue();
    if (current) {
      const detail = await api(`/api/submissions/${encodeURIComponent(current.id)}`);
      current = { ...current, ...detail };
      $("#detail-state").textContent = detail.state || "unknown";
      $("#detail-state").className = `state state-${detail.state}`;
      $("#detail-extra").textContent = [detail.reason && `reason: ${detail.reason}`,
        detail.story_id && `story: ${detail.story_id}`].filter(Boolean).join(" · ");
      applyState(detail.state);
    }
  } catch (err) {
    status(`Refresh failed: ${err.message}`, true);
  }
}

async function pull() {
  status("Pulling new sealed submissions…");
  try {
    const result = await api("/api/pull", { method: "POST" });
    status(`Pulled ${result.pulled} submission(s).`);
  } catch (err) {
    status(`Pull failed: ${err.message}`, true);
  }
  await loadQueue().catch(() => {});
}

async function start() {
  try {
    await login();
    info = await api("/api/info");
  } catch (err) {
    $("#login").hidden = false;
    status(err.status === 401 ? "Not logged in." : `Cannot start: ${err.message}`, true);
    return;
  }
  $("#main").hidden = false;
  $("#server").textContent = info.server ? `service: ${info.server}` : "no service configured";
  fillReasons();
  for (const radio of document.querySelectorAll("input[name=decision]")) {
    radio.addEventListener("change", fillReasons);
  }
  $("#filter-state").addEventListener("change", () => loadQueue().catch(showError));
  $("#filter-pulled").addEventListener("change", () => loadQueue().catch(showError));
  $("#refresh").addEventListener("click", () => refreshAll());
  $("#pull").addEventListener("click", pull);
  $("#decision-form").addEventListener("submit", decide);
  $("#publish-form").addEventListener("submit", publish);
  $("#preview-btn").addEventListener("click", preview);
  $("#anonymous").addEventListener("change", () => {
    $("#display-name").disabled = $("#anonymous").checked;
  });
  await loadQueue().catch(showError);
  document.body.dataset.ready = "1";
  status("Ready.");
}

function showError(err) {
  status(err.message, true);
}

start();
