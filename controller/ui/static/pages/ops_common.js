// Helpers shared by the ops pages (functions, function, schedules, …); not a route itself.

// In `tickrun ui` (no controller) the function and schedule APIs do not exist: say so.
export function needsController(root, ctx, title) {
  if (ctx.session?.mode !== "local") return false;
  const { h } = ctx.ui;
  root.append(
    h("h1", null, title),
    ctx.ui.empty(
      `${title} needs a controller: this is tickrun ui on a local runs store. ` +
        "Start one with `tickrun controller start` and open its address.",
    ),
  );
  root.querySelector(".empty")?.classList.add("needs-controller");
  return true;
}

// The kinds of a spec's triggers, e.g. "http, kafka (ticks)".
export function triggerText(spec) {
  const triggers = spec?.spec?.triggers || {};
  // No trigger listed: Nuclio's default HTTP trigger.
  if (!Object.keys(triggers).length) return "http (default)";
  return Object.entries(triggers)
    .map(([name, t]) => {
      const kind = t?.kind || name;
      const topics = t?.attributes?.topics;
      return topics && topics.length ? `${kind} (${topics.join(", ")})` : kind;
    })
    .join(", ");
}

export function hasKafka(spec) {
  return Object.values(spec?.spec?.triggers || {}).some((t) => t?.kind === "kafka-cluster" || t?.kind === "kafka");
}

export function pct(v) {
  return typeof v === "number" && Number.isFinite(v) ? `${(v * 100).toFixed(v < 0.01 && v > 0 ? 2 : 1)} %` : "—";
}

export function ms(v) {
  return typeof v === "number" && Number.isFinite(v) ? `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms` : "—";
}

export function rate(v) {
  return typeof v === "number" && Number.isFinite(v) ? `${v < 10 ? v.toFixed(2) : v.toFixed(1)}/s` : "—";
}

// "p0 12 · p1 3" for the Kafka partitions of a metrics answer (null when there is no Kafka).
export function lagParts(metrics) {
  const triggers = metrics?.kafka;
  if (!Array.isArray(triggers) || !triggers.length) return null;
  const parts = [];
  let total = 0;
  let known = true;
  for (const t of triggers) {
    if (t.lag == null) known = false;
    else total += t.lag;
    for (const p of t.partitions || []) {
      const topic = (t.topics || []).length > 1 ? `${p.topic}/` : "";
      parts.push({ label: `${topic}p${p.partition}`, lag: p.lag, topic: p.topic, partition: p.partition, end: p.end, committed: p.committed, group: t.group });
    }
  }
  return { total: known ? total : null, parts };
}

// A small modal form: fields [{name, label, type, value, min}] → Promise<values | null>.
export function formDialog(ui, title, fields, { ok = "OK" } = {}) {
  const { h } = ui;
  return new Promise((resolve) => {
    const inputs = {};
    const rows = fields.map((f) => {
      const input = h("input", { type: f.type || "text", name: f.name, value: f.value ?? "", min: f.min, required: true });
      inputs[f.name] = input;
      return h("label", { style: { display: "block", margin: "6px 0" } }, `${f.label} `, input);
    });
    const done = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    const form = h(
      "form",
      { method: "dialog" },
      h("p", null, h("b", null, title)),
      rows,
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => done(null) }, "Cancel"), h("button", { type: "submit", class: "primary" }, ok)),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const out = {};
      for (const [k, el] of Object.entries(inputs)) out[k] = el.value;
      done(out);
    });
    const dlg = h("dialog", { class: "confirm form-dialog" }, form);
    dlg.addEventListener("cancel", (e) => {
      e.preventDefault();
      done(null);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}

// Run fn now and every ms while the page is shown (no overlap; stops on leaving).
export function poll(ctx, fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped || !ctx.alive()) return;
    try {
      await fn();
    } catch (err) {
      if (err?.name !== "AbortError") console.warn("poll failed", err);
    }
    if (!stopped && ctx.alive()) timer = setTimeout(tick, ms);
  };
  ctx.onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  return tick();
}

// Empty `el` and append the children that are not null/undefined/false (the DOM's own append
// would write "null").
export function put(el, ...children) {
  while (el.firstChild) el.removeChild(el.firstChild);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}
