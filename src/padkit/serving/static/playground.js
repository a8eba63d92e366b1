// padkit playground: builds a preference from sliders and free text, streams the base and the personalized
// answer side by side from the server's own OpenAI-compatible API, and colours tokens by their PAD reward.
"use strict";

const $ = (id) => document.getElementById(id);
const sliders = []; // {kind: "pair" | "single", left, right, input}

async function api(path, options = {}) {
  const headers = {"Content-Type": "application/json"};
  const key = $("api-key") ? $("api-key").value.trim() : "";
  if (key) headers.Authorization = `Bearer ${key}`; // a server started with keys needs one on every /v1 call
  const response = await fetch(path, {headers, ...options});
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* keep the status line */ }
    throw new Error(message);
  }
  return response;
}

function addSlider(kind, left, right) {
  const row = document.createElement("div");
  row.className = kind === "pair" ? "slider" : "slider single";
  const input = document.createElement("input");
  input.type = "range";
  input.step = "0.1";
  input.value = "0";
  input.min = kind === "pair" ? "-1" : "0";
  input.max = "1";
  input.id = `slider-${left.name}`;
  input.setAttribute("aria-label", kind === "pair" ? `${left.name} to ${right.name}` : left.name);
  input.title = kind === "pair" ? `${left.description} ↔ ${right.description}` : left.description;
  const a = document.createElement("span");
  a.textContent = left.name;
  const b = document.createElement("span");
  b.textContent = kind === "pair" ? right.name : "";
  row.append(a, input, b);
  input.addEventListener("input", updatePreview);
  $("sliders").append(row);
  sliders.push({kind, left: left.name, right: right && right.name, input});
}

function buildSliders(dimensions) {
  const byName = Object.fromEntries(dimensions.map((d) => [d.name, d]));
  const seen = new Set();
  for (const d of dimensions) {
    if (seen.has(d.name)) continue;
    seen.add(d.name);
    if (d.opposite && byName[d.opposite]) {
      seen.add(d.opposite);
      addSlider("pair", d, byName[d.opposite]);
    } else {
      addSlider("single", d, null);
    }
  }
}

// The preference as the API's list form: catalog dimensions by name, free text as a "text" item.
function preferenceItems() {
  const items = [];
  for (const s of sliders) {
    const v = Number(s.input.value);
    if (v === 0) continue;
    const name = s.kind === "pair" && v < 0 ? s.left : s.kind === "pair" ? s.right : s.left;
    items.push({dimension: name, weight: Math.abs(v)});
  }
  const text = $("free-text").value.trim();
  const weight = Number($("free-weight").value);
  if (text && weight > 0) items.push({text, weight});
  return items;
}

function updatePreview() {
  const items = preferenceItems();
  $("preference-preview").textContent = items.length
    ? items.map((i) => `${i.dimension || i.text}=${i.weight}`).join(", ")
    : "(none)";
}

// Stream one chat completion; onDelta gets text, the resolved value is the final chunk's `tokens` (or null).
async function stream(body, onDelta) {
  const response = await api("/v1/chat/completions", {method: "POST", body: JSON.stringify({...body, stream: true})});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let tokens = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") return tokens;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) onDelta(delta.content);
      if (chunk.tokens) tokens = chunk.tokens;
    }
  }
  return tokens;
}

function fmt(x) {
  return x === null || x === undefined ? "–" : x.toFixed(2);
}

function showTooltip(target, token) {
  const tip = $("tooltip");
  tip.replaceChildren();
  const head = document.createElement("div");
  head.textContent = `"${token.text}"  base log-prob ${fmt(token.base_logprob)}  reward ${fmt(token.reward)}  score ${fmt(token.score)}`;
  const table = document.createElement("table");
  const header = table.insertRow();
  for (const h of ["alternative", "base log-p", "reward", "score"]) {
    const th = document.createElement("th");
    th.textContent = h;
    header.append(th);
  }
  for (const alt of token.alternatives) {
    const row = table.insertRow();
    if (alt.token_id === token.token_id) row.className = "chosen";
    for (const cell of [JSON.stringify(alt.text), fmt(alt.base_logprob), fmt(alt.reward), fmt(alt.score)]) {
      row.insertCell().textContent = cell;
    }
  }
  tip.append(head, table);
  tip.hidden = false;
  const box = target.getBoundingClientRect();
  const left = Math.min(box.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 8);
  tip.style.left = `${Math.max(4, left)}px`;
  tip.style.top = `${box.bottom + window.scrollY + 6}px`;
}

function renderTokens(container, tokens) {
  const scale = Math.max(1e-6, ...tokens.map((t) => Math.abs(t.reward || 0)));
  container.replaceChildren();
  tokens.forEach((token, i) => {
    const span = document.createElement("span");
    span.className = "tok";
    span.dataset.index = String(i);
    span.dataset.reward = String(token.reward);
    if (token.eos) span.classList.add("eos"); // shown by CSS, so the answer's text stays the text
    else span.textContent = token.text;
    const strength = Math.min(1, Math.abs(token.reward || 0) / scale) * 0.55;
    span.style.background = (token.reward || 0) >= 0 ? `rgba(22, 163, 74, ${strength})` : `rgba(220, 38, 38, ${strength})`;
    span.addEventListener("mouseenter", () => showTooltip(span, token));
    span.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    span.addEventListener("click", () => showTooltip(span, token));
    container.append(span);
  });
}

async function generate(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  const items = preferenceItems();
  const status = $("status");
  status.classList.remove("error");
  if (!prompt) { status.textContent = "Type a prompt first."; status.classList.add("error"); return; }
  if (!items.length) { status.textContent = "Move a slider or type a preference."; status.classList.add("error"); return; }
  const method = $("method").value;
  const common = {messages: [{role: "user", content: prompt}], max_tokens: Number($("max-tokens").value), temperature: 0};
  $("base-answer").textContent = "";
  $("pad-answer").textContent = "";
  $("tooltip").hidden = true;
  $("generate").disabled = true;
  status.textContent = "Generating…";
  const started = performance.now();
  try {
    const [, tokens] = await Promise.all([
      stream({...common, method: "base"}, (t) => { $("base-answer").textContent += t; }),
      stream(
        {...common, method, preference: items, alignment_weight: Number($("weight").value), diagnostics: method === "pad"},
        (t) => { $("pad-answer").textContent += t; },
      ),
    ]);
    if (tokens) renderTokens($("pad-answer"), tokens);
    status.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
  } catch (err) {
    status.textContent = err.message;
    status.classList.add("error");
  } finally {
    $("generate").disabled = false;
  }
}

async function saveProfile() {
  const user = $("user").value.trim();
  const out = $("profile-status");
  out.classList.remove("error");
  const items = preferenceItems();
  if (!user || !items.length) {
    out.textContent = !user ? "Type a user name." : "Move a slider or type a preference first.";
    out.classList.add("error");
    return;
  }
  try {
    const response = await api(`/v1/profiles/${encodeURIComponent(user)}`, {
      method: "PUT",
      body: JSON.stringify({preference: items, alignment_weight: Number($("weight").value)}),
    });
    const saved = await response.json();
    out.textContent = `Saved profile for ${saved.user}: send "user": "${saved.user}" with any request.`;
  } catch (err) {
    out.textContent = err.message;
    out.classList.add("error");
  }
}

async function main() {
  $("weight").addEventListener("input", () => { $("weight-value").textContent = $("weight").value; });
  $("free-text").addEventListener("input", updatePreview);
  $("free-weight").addEventListener("input", updatePreview);
  $("controls").addEventListener("submit", generate);
  $("save-profile").addEventListener("click", saveProfile);
  $("api-key").addEventListener("change", () => { if (!sliders.length) load(); });
  await load();
}

async function load() {
  try {
    const [health, dims] = await Promise.all([api("/health"), api("/v1/dimensions")]);
    const info = await health.json();
    $("model-info").textContent = `base model: ${info.model} · PersRM: ${info.rm}`;
    $("weight").value = info.default_weight; // the strength a request without one gets from this server
    $("weight-value").textContent = $("weight").value;
    buildSliders((await dims.json()).data);
    updatePreview();
    document.body.dataset.ready = "true";
  } catch (err) {
    $("model-info").textContent = `cannot reach the server: ${err.message} (enter the API key below if it needs one)`;
  }
}

main();
