// The chat page's behaviour: streams answers from /v1/chat/completions and lets the
// person stop them. A question goes into the page with textContent; an answer is shown
// as Markdown by markdown.js, which escapes any raw HTML in it.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  conversation: $("conversation"), hint: $("hint"), form: $("ask"), query: $("query"),
  send: $("send"), stop: $("stop"), clear: $("clear"), status: $("status"), model: $("model"),
  picker: $("model-picker"), loading: $("model-loading"),
};
// Settings kept in this browser between visits, by input id.
const SAVED = ["temperature", "max-tokens", "system", "api-key"];
const history = [];   // the conversation so far, as OpenAI messages
let controller = null; // aborts the answer in flight

function restoreSettings() {
  for (const id of SAVED) {
    const saved = localStorage.getItem("laptop-llama." + id);
    if (saved !== null) $(id).value = saved;
    $(id).addEventListener("change", () => localStorage.setItem("laptop-llama." + id, $(id).value));
  }
}

function headers() {
  const key = $("api-key").value.trim();
  return Object.assign({ "Content-Type": "application/json" }, key ? { Authorization: "Bearer " + key } : {});
}

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

// A block at the end of the conversation: "message user", "message assistant" or "meta".
function addBlock(className, text) {
  ui.hint.hidden = true;
  const div = document.createElement("div");
  div.className = className;
  div.textContent = text;
  ui.conversation.append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

// The server's error message, whatever went wrong (its JSON shape, or a bare status).
async function errorText(response) {
  try {
    const body = await response.json();
    const message = body.error && body.error.message;
    if (response.status === 401) {
      askForKey();
      return "API key needed or wrong: enter it under Settings";
    }
    if (message) return message;
  } catch (_) { /* not JSON */ }
  return "the server answered " + response.status;
}

// The server wants an API key (and every call sends the one entered): open the settings at its field.
function askForKey() {
  $("settings").open = true;
  $("api-key").focus();
}

// The model picker: every model of the library, which are loaded, the default chosen first.
async function showModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) {
      ui.model.textContent = await errorText(response);
      return;
    }
    const models = (await response.json()).data;
    const chosen = ui.picker.value || (models.find((m) => m.default) || models[0] || {}).id;
    ui.picker.replaceChildren(...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.id + (m.status && m.status.value === "loaded" ? " (loaded)" : "");
      option.dataset.status = m.status ? m.status.value : "loaded";
      return option;
    }));
    ui.picker.value = chosen;
    ui.picker.hidden = models.length < 2;
    ui.model.textContent = chosen || "no model";
  } catch (_) {
    ui.model.textContent = "server unreachable";
  }
}

// Choosing a model that is not loaded loads it now, with a spinner, so the first answer is not slow.
async function chooseModel() {
  ui.model.textContent = ui.picker.value;
  const option = ui.picker.selectedOptions[0];
  if (!option || option.dataset.status === "loaded") return;
  ui.loading.hidden = false;
  ui.picker.disabled = true;
  try {
    const response = await fetch("/models/load", {
      method: "POST", headers: headers(), body: JSON.stringify({ model: ui.picker.value }),
    });
    if (!response.ok && response.status !== 400) setStatus(await errorText(response), true);
  } catch (_) {
    setStatus("server unreachable", true);
  } finally {
    ui.loading.hidden = true;
    ui.picker.disabled = false;
    await showModel();
  }
}

// Server-sent events from a fetch body: calls onData with each parsed `data:` payload.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

function requestBody() {
  const system = $("system").value.trim();
  return {
    model: ui.picker.value || undefined,
    messages: (system ? [{ role: "system", content: system }] : []).concat(history),
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
    stream: true,
    stream_options: { include_usage: true },
  };
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  ui.clear.disabled = busy;
}

async function ask(query) {
  history.push({ role: "user", content: query });
  addBlock("message user", query);
  const bubble = addBlock("message assistant", "");
  const meta = addBlock("meta muted", ""); // the model and its rate, under the answer
  const state = { text: "", model: null, tokens: 0, first: 0, last: 0, timings: null, usage: null, reason: null };
  controller = new AbortController();
  setBusy(true);
  setStatus("waiting for the model…");
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(requestBody()), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    await readEvents(response, (chunk) => onChunk(chunk, bubble, state));
    setStatus(summary(state, state.reason === "length" ? "stopped at max tokens" : "done"));
  } catch (error) {
    if (error.name === "AbortError") {
      setStatus(summary(state, "stopped"));
    } else {
      bubble.classList.add("error");
      if (!state.text) bubble.textContent = error.message;
      setStatus(error.message, true);
    }
  } finally {
    controller = null;
    setBusy(false);
    if (state.tokens) meta.textContent = [state.model || ui.model.textContent, figures(state)].join(" · ");
    // Keep what was said, even a stopped answer, so the next question has its context.
    if (state.text && !bubble.classList.contains("error")) {
      history.push({ role: "assistant", content: state.text });
    } else {
      history.pop();
    }
  }
}

function onChunk(chunk, bubble, state) {
  if (chunk.error) throw new Error(chunk.error.message);
  if (chunk.usage) state.usage = chunk.usage;
  if (chunk.timings) state.timings = chunk.timings;
  if (chunk.model) state.model = chunk.model;
  const choice = chunk.choices && chunk.choices[0];
  if (!choice) return;
  if (choice.finish_reason) state.reason = choice.finish_reason;
  const text = choice.delta && choice.delta.content;
  if (!text) return;
  state.last = performance.now();
  if (!state.tokens) state.first = state.last;
  state.tokens += 1; // the server sends about one chunk per token
  state.text += text;
  markdown.render(bubble, state.text);
  bubble.scrollIntoView({ block: "end" });
  setStatus(summary(state, "answering"));
}

// "12 tokens · 18.3 tokens/s": the server's own rate once it has sent it, else the page's estimate.
function figures(state) {
  const tokens = state.usage ? state.usage.completion_tokens : state.tokens;
  let rate = state.timings ? state.timings.tokens_per_second : null;
  if (rate === null && state.tokens > 1) rate = (state.tokens - 1) / ((state.last - state.first) / 1000);
  const parts = [tokens + (tokens === 1 ? " token" : " tokens")];
  if (rate !== null && isFinite(rate)) parts.push(rate.toFixed(1) + " tokens/s");
  return parts.join(" · ");
}

// "answering · 12 tokens · 18.3 tokens/s"
function summary(state, what) {
  return what + " · " + figures(state);
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const query = ui.query.value.trim();
  if (!query || controller) return;
  ui.query.value = "";
  ask(query);
});
ui.query.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.form.requestSubmit();
  }
});
// Aborting closes the connection; the server notices and stops generating.
ui.stop.addEventListener("click", () => controller && controller.abort());
ui.clear.addEventListener("click", () => {
  history.length = 0;
  ui.conversation.querySelectorAll(".message, .meta").forEach((m) => m.remove());
  ui.hint.hidden = false;
  setStatus("");
});
$("api-key").addEventListener("change", showModel);
ui.picker.addEventListener("change", chooseModel);

markdown.handleCopyButtons(ui.conversation);
restoreSettings();
showModel();
