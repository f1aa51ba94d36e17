// Answers as Markdown: markdown-it (vendor/, shipped with the page so that it works offline)
// turns the model's text into HTML. Raw HTML in an answer is escaped, never parsed
// (markdown-it's default `html: false`), and its link check refuses javascript: URLs,
// so a model that writes <script> or <img onerror=...> shows those characters as text.
"use strict";

const markdown = (() => {
  const md = window.markdownit({ html: false, linkify: true });

  // Table column alignment as a class: the page's CSP refuses style attributes.
  md.core.ruler.push("align_as_class", (state) => {
    for (const token of state.tokens) {
      if (token.type !== "th_open" && token.type !== "td_open") continue;
      const style = token.attrGet("style");
      if (!style) continue;
      token.attrs = token.attrs.filter(([name]) => name !== "style");
      token.attrJoin("class", "align-" + style.replace("text-align:", ""));
    }
  });

  // Links open in a new tab, so that following one does not lose the conversation.
  md.renderer.rules.link_open = (tokens, i, options, env, self) => {
    tokens[i].attrSet("target", "_blank");
    tokens[i].attrSet("rel", "noopener noreferrer");
    return self.renderToken(tokens, i, options);
  };

  // Code blocks get a bar with their language and a Copy button (handled by copyCode below).
  for (const rule of ["fence", "code_block"]) {
    const plain = md.renderer.rules[rule];
    md.renderer.rules[rule] = (tokens, i, options, env, self) => {
      const lang = md.utils.escapeHtml((tokens[i].info || "").trim().split(/\s+/)[0]);
      return '<div class="code"><div class="code-bar"><span>' + lang +
        '</span><button type="button" class="copy">Copy</button></div>' + plain(tokens, i, options, env, self) +
        "</div>";
    };
  }

  // The clipboard API needs a secure context (localhost or https); elsewhere select the code and
  // ask for the older copy command, which leaves the selection for Ctrl+C if even that is refused.
  function copyCode(button) {
    const code = button.closest(".code").querySelector("code");
    const show = (text) => {
      button.textContent = text;
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(code.textContent).then(() => show("Copied"), () => show("Copy failed"));
      return;
    }
    const range = document.createRange();
    range.selectNodeContents(code);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    show(document.execCommand("copy") ? "Copied" : "Press Ctrl+C");
  }

  return {
    // Re-rendered on every streamed piece: markdown-it takes well under a millisecond per answer.
    render(element, text) {
      element.innerHTML = md.render(text);
    },
    // One listener for every Copy button, present and future (no inline handlers under the CSP).
    handleCopyButtons(container) {
      container.addEventListener("click", (event) => {
        const button = event.target.closest("button.copy");
        if (button) copyCode(button);
      });
    },
  };
})();
