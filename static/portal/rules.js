// Topic rules and exemptions: preview a template for a sample cid/action before saving, fill the
// form from an example, and confirm deletions.
(function () {
  "use strict";

  document.addEventListener("submit", (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  const form = document.getElementById("rule-form");
  if (!form) return;
  const fieldset = form.querySelector("fieldset.preview");
  const out = document.getElementById("preview-result");
  const cid = document.getElementById("preview-cid");
  const sample = document.getElementById("preview-action");
  const field = (name) => form.elements.namedItem(name);

  async function preview() {
    const params = new URLSearchParams({
      direction: field("direction").value,
      template: field("template").value,
      cid: cid.value,
      action: sample.value,
    });
    if (!field("template").value) {
      out.className = ""; out.textContent = "Type a template to see the topic it gives.";
      return;
    }
    const r = await fetch(`${fieldset.dataset.url}?${params}`, {
      headers: { Accept: "application/json" }, credentials: "same-origin",
    });
    const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    out.className = r.ok ? "ok" : "fail";
    out.textContent = r.ok ? `→ ${data.topic}` : data.error;
  }

  let typing = null;
  const soon = () => { clearTimeout(typing); typing = setTimeout(preview, 300); };
  document.getElementById("preview-button").addEventListener("click", preview);
  for (const input of [field("template"), field("direction"), cid, sample]) {
    input.addEventListener("input", soon);
  }
  // an action typed in the rule is the natural sample
  field("action").addEventListener("input", () => { if (field("action").value) sample.value = field("action").value; soon(); });

  for (const button of document.querySelectorAll(".use-example")) {
    button.addEventListener("click", () => {
      field("direction").value = button.dataset.direction;
      field("action").value = button.dataset.action;
      field("station").value = button.dataset.station;
      field("template").value = button.dataset.template;
      if (button.dataset.action) sample.value = button.dataset.action;
      if (button.dataset.station) cid.value = button.dataset.station;
      form.scrollIntoView({ behavior: "smooth" });
      preview();
    });
  }
  if (field("template").value) preview();
})();
