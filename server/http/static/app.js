// The chat page's behaviour: streams answers from /v1/chat/completions and lets the
// person stop them. Text goes into the page with textContent only, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  conversation: $("conversation"), hint: $("hint"), form: $("ask"), query: $("query"),
  send: $("send"), stop: $("stop"), clear: $("clear"), status: $("status"), model: $("model"),
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

function addMessage(role, text) {
  ui.hint.hidden = true;
  const div = document.createElement("div");
  div.className = "message " + role;
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
    if (response.status === 401) return "API key needed or wrong: enter it under Settings";
    if (message) return message;
  } catch (_) { /* not JSON */ }
  return "the server answered " + response.status;
}

async function showModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    ui.model.textContent = response.ok ? (await response.json()).data[0].id : await errorText(response);
  } catch (_) {
    ui.model.textContent = "server unreachable";
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
  addMessage("user", query);
  const bubble = addMessage("assistant", "");
  const state = { tokens: 0, first: 0, timings: null, usage: null, reason: null };
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
      if (!bubble.textContent) bubble.textContent = error.message;
      setStatus(error.message, true);
    }
  } finally {
    controller = null;
    setBusy(false);
    // Keep what was said, even a stopped answer, so the next question has its context.
    if (bubble.textContent && !bubble.classList.contains("error")) {
      history.push({ role: "assistant", content: bubble.textContent });
    } else {
      history.pop();
    }
  }
}

function onChunk(chunk, bubble, state) {
  if (chunk.error) throw new Error(chunk.error.message);
  if (chunk.usage) state.usage = chunk.usage;
  if (chunk.timings) state.timings = chunk.timings;
  const choice = chunk.choices && chunk.choices[0];
  if (!choice) return;
  if (choice.finish_reason) state.reason = choice.finish_reason;
  const text = choice.delta && choice.delta.content;
  if (!text) return;
  if (!state.tokens) state.first = performance.now();
  state.tokens += 1; // the server sends about one chunk per token
  bubble.textContent += text;
  bubble.scrollIntoView({ block: "end" });
  setStatus(summary(state, "answering"));
}

// "answering · 12 tokens · 18.3 tokens/s": the server's own rate once it has sent it.
function summary(state, what) {
  const tokens = state.usage ? state.usage.completion_tokens : state.tokens;
  let rate = state.timings ? state.timings.tokens_per_second : null;
  if (rate === null && state.tokens > 1) rate = (state.tokens - 1) / ((performance.now() - state.first) / 1000);
  const parts = [what, tokens + (tokens === 1 ? " token" : " tokens")];
  if (rate !== null && isFinite(rate)) parts.push(rate.toFixed(1) + " tokens/s");
  return parts.join(" · ");
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
  ui.conversation.querySelectorAll(".message").forEach((m) => m.remove());
  ui.hint.hidden = false;
  setStatus("");
});
$("api-key").addEventListener("change", showModel);

restoreSettings();
showModel();
