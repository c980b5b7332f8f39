// "Send a command" on a station page: pre-fill the payload with the action's example, send it,
// then poll the message log for the station's answer (or the gateway's error) by UniqueId.
(function () {
  "use strict";

  const form = document.getElementById("command-form");
  if (!form) return;
  const action = document.getElementById("command-action");
  const payload = document.getElementById("command-payload");
  const result = document.getElementById("command-result");
  const button = document.getElementById("command-send");
  const examples = JSON.parse(document.getElementById("command-examples").textContent);
  const POLL_MS = 700;
  const GIVE_UP_MS = 45000;  // past the gateway's default 30 s call timeout, which answers for it

  function fill() { payload.value = JSON.stringify(examples[action.value] || {}, null, 2); }
  action.addEventListener("change", fill);
  document.getElementById("command-reset").addEventListener("click", fill);
  fill();

  function show(state, title, detail) {
    result.hidden = false;
    result.className = `result ${state}`;
    const children = [Object.assign(document.createElement("div"), { className: "title", textContent: title })];
    if (detail !== undefined) {
      children.push(Object.assign(document.createElement("pre"), {
        textContent: typeof detail === "string" ? detail : JSON.stringify(detail, null, 2),
      }));
    }
    result.replaceChildren(...children);
  }

  async function follow(uid, label) {
    // "~" never occurs in a cid, so only the placeholder is replaced
    const url = form.dataset.answerUrl.replace("~uid~", encodeURIComponent(uid));
    const started = Date.now();
    show("waiting", `${label}: waiting for the station…`, `UniqueId ${uid}`);
    while (Date.now() - started < GIVE_UP_MS) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      let data;
      try {
        const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!r.ok) continue;
        data = await r.json();
      } catch (e) { continue; }
      if (data.state === "answered") return show("answered", `${label}: the station answered`, data.answer);
      if (data.state === "error") return show("error", `${label}: failed`, data.answer);
      if (data.state === "sent") show("waiting", `${label}: delivered to the station, waiting for its answer…`, `UniqueId ${uid}`);
    }
    show("error", `${label}: no answer seen in the log after ${GIVE_UP_MS / 1000} s`,
      "Is a gateway process running and connected to the broker?");
  }

  async function post(confirmed) {
    const body = new FormData(form);
    if (confirmed) body.set("confirm", "on");
    // form.action would be the <select name="action">: read the attribute
    const r = await fetch(form.getAttribute("action"), {
      method: "POST", body, credentials: "same-origin", headers: { Accept: "application/json" },
    });
    return [r, await r.json().catch(() => ({ error: `HTTP ${r.status}` }))];
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { JSON.parse(payload.value || "{}"); }
    catch (e) { return show("error", "The payload is not valid JSON", String(e.message)); }
    button.disabled = true;
    try {
      let [r, data] = await post(false);
      // a disruptive command: the gateway says why, the operator decides
      if (!r.ok && data.confirm) {
        if (!window.confirm(data.error)) return show("error", "Not sent: cancelled", data.error);
        [r, data] = await post(true);
      }
      if (!r.ok) {
        const where = data.path ? `at ${data.path} (${data.rule})` : undefined;
        show("error", `Not sent: ${data.error || r.statusText}`, where);
        return;
      }
      await follow(data.unique_id, `${action.value} on ${data.topic}`);
    } finally {
      button.disabled = false;
    }
  });

  const pending = document.getElementById("command-pending");
  if (pending) follow(pending.dataset.uid, "Command");
})();
