// The functions list (#/functions): state, platform, replicas ready/desired, URL, triggers, and
// from the replicas' metrics the request rate, error rate, latency and Kafka lag per partition.
// Refreshed every 5 s while shown.

import { hasKafka, lagParts, ms, needsController, pct, poll, rate, triggerText } from "./ops_common.js";

const REFRESH_MS = 5000;

export async function render(root, params, ctx) {
  const { h } = ctx.ui;
  const ui = ctx.ui;
  if (needsController(root, ctx, "Functions")) return;
  root.append(h("h1", null, "Functions"));
  const body = h("div", null, ui.loading());
  root.append(body);
  const metrics = new Map(); // name → metrics JSON | {unavailable: message}
  let functions = null;
  // Leaving cancels the reads in flight (a finished page's late error would reach the console).
  const reads = new AbortController();
  ctx.onLeave(() => reads.abort());

  const draw = () => {
    ui.clear(body);
    if (!functions.length) {
      body.append(ui.empty("No functions deployed yet. Deploy one with `tickrun deploy <folder>`."));
      return;
    }
    const m = (f) => metrics.get(f.name);
    const columns = [
      { key: "name", label: "Name", render: (f) => ui.link(`#/functions/${encodeURIComponent(f.name)}`, f.name, { class: "fn-link" }) },
      { key: "state", label: "State", render: (f) => ui.stateBadge(f.state) },
      { key: "platform", label: "Platform" },
      {
        key: "replicas",
        label: "Replicas",
        num: true,
        title: "ready / desired (min–max)",
        render: (f) => h("span", { class: "replicas" }, `${f.replicas.ready} / ${f.replicas.desired}`, h("span", { class: "muted" }, ` (${f.replicas.min}–${f.replicas.max})`)),
      },
      {
        key: "url",
        label: "URL",
        render: (f) =>
          h("span", null, h("a", { href: f.url, target: "_blank", rel: "noopener", class: "mono" }, f.url), f.port ? h("span", { class: "muted" }, ` :${f.port}`) : null),
      },
      { key: "triggers", label: "Triggers", get: (f) => triggerText(f.spec) || "—" },
      { key: "rate", label: "Req/s", num: true, render: (f) => (m(f)?.unavailable ? "n/a" : rate(m(f)?.request_rate)) },
      { key: "errors", label: "Errors", num: true, render: (f) => (m(f)?.unavailable ? "n/a" : pct(m(f)?.error_rate)) },
      { key: "p50", label: "p50", num: true, render: (f) => (m(f)?.unavailable ? "n/a" : ms(m(f)?.latency_ms?.p50)) },
      { key: "p99", label: "p99", num: true, render: (f) => (m(f)?.unavailable ? "n/a" : ms(m(f)?.latency_ms?.p99)) },
      {
        key: "lag",
        label: "Kafka lag",
        title: "records behind, per partition",
        render: (f) => {
          if (!hasKafka(f.spec)) return h("span", { class: "muted" }, "—");
          const lp = lagParts(m(f));
          if (!lp) return f.scale?.lag != null ? String(f.scale.lag) : h("span", { class: "muted" }, m(f) ? "unknown" : "…");
          return h(
            "span",
            { class: "lag" },
            h("b", null, lp.total == null ? "?" : ui.fmt.int(lp.total)),
            " ",
            h("span", { class: "muted mono" }, lp.parts.map((p) => `${p.label}:${p.lag ?? "?"}`).join(" ")),
          );
        },
      },
    ];
    body.append(ui.table({ columns, rows: functions, rowKey: null, empty: "No functions." }));
    body.append(h("p", { class: "muted" }, `${functions.length} function(s); refreshed every ${REFRESH_MS / 1000} s. Rates over the metrics window.`));
  };

  const refresh = async () => {
    const answer = await ctx.api.get("/api/functions", null, { quiet: functions !== null, signal: reads.signal });
    if (!ctx.alive()) return;
    functions = answer.functions || [];
    functions.sort((a, b) => a.name.localeCompare(b.name));
    draw();
    // Metrics per function, in parallel; a function without ready replicas may have none.
    await Promise.all(
      functions.map(async (f) => {
        // Only a ready function has replicas to read (building, deleting, error: none).
        if (f.state !== "ready") {
          metrics.set(f.name, { unavailable: f.state });
          return;
        }
        try {
          metrics.set(f.name, await ctx.api.get(`/api/functions/${encodeURIComponent(f.name)}/metrics`, null, { quiet: true, signal: reads.signal }));
        } catch (err) {
          if (err.name === "AbortError") return;
          metrics.set(f.name, { unavailable: err.message });
        }
      }),
    );
    if (ctx.alive()) draw();
  };
  try {
    await poll(ctx, refresh, REFRESH_MS);
  } catch (err) {
    ui.clear(body).append(ui.errorBox(err));
  }
  if (functions === null && ctx.alive()) {
    ui.clear(body).append(ui.errorBox("The functions could not be listed."));
  }
}
