// One function (#/functions/<name>): summary, live metrics (rates, latency, Kafka lag per
// partition), replicas, replica logs (tail and follow), events, revisions (builds), the spec,
// and the actions scale / redeploy / delete, each behind a confirmation.

import { formDialog, hasKafka, lagParts, ms, needsController, pct, poll, put, rate, triggerText } from "./ops_common.js";

const REFRESH_MS = 4000;
const FOLLOW_MS = 1000;
const MAX_LOG_LINES = 5000;

export async function render(root, params, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  const name = params.path[0];
  if (needsController(root, ctx, "Function")) return;
  const path = `/api/functions/${encodeURIComponent(name)}`;
  // Every read of this page shares one abort signal: leaving (or deleting the function) cancels
  // what is in flight, so no request of a gone page ends in an error the console would log.
  const reads = new AbortController();
  let stopped = false;
  const stop = () => {
    stopped = true;
    reads.abort();
  };
  ctx.onLeave(stop);
  const q = { quiet: true, signal: reads.signal };
  root.append(h("div", { class: "crumbs" }, ui.link("#/functions", "Functions"), " / ", h("span", { class: "mono" }, name)));
  const title = h("h1", null, name);
  root.append(title, ui.loading());
  let fn = await ctx.api.get(path, null, { signal: reads.signal });
  if (stopped || !ctx.alive()) return;
  root.querySelector(".loading")?.remove();

  const summary = h("div", { class: "summary" });
  const actions = h("div", { class: "toolbar actions" });
  const metricsBox = h("div", null, ui.loading("Reading the replicas' metrics…"));
  const replicasBox = h("div");
  const logsCard = h("div");
  const eventsBox = h("div", null, ui.loading());
  const buildsBox = h("div", null, ui.loading());
  const specBox = h("pre", { class: "spec mono" });
  root.append(
    summary,
    actions,
    ui.section("Metrics", metricsBox),
    ui.section("Replicas", replicasBox),
    ui.section("Logs", logsCard),
    ui.section("Events", eventsBox),
    ui.section("Revisions", buildsBox),
    ui.section("Spec", specBox),
  );

  const item = (label, value) => h("span", null, `${label} `, h("b", null, value));
  const drawFunction = () => {
    ui.clear(title).append(fn.name, " ", ui.stateBadge(fn.state));
    const r = fn.replicas;
    put(summary, 
      item("platform", fn.platform),
      item("version", String(fn.version)),
      item("revision", fn.revision ? String(fn.revision).slice(0, 12) : "—"),
      h("span", { class: "replica-count" }, "replicas ", h("b", { id: "replicas-ready" }, `${r.ready} / ${r.desired}`), h("span", { class: "muted" }, ` (min ${r.min}, max ${r.max})`)),
      item("URL", h("a", { href: fn.url, target: "_blank", rel: "noopener", class: "mono" }, fn.url)),
      fn.port ? item("port", `${fn.port_host || ""}:${fn.port}`) : null,
      item("triggers", triggerText(fn.spec) || "—"),
      fn.scale?.reason ? item("scale", fn.scale.reason) : null,
      fn.message ? h("span", { class: "muted" }, fn.message) : null,
      item("updated", fmt.time(fn.updated_at)),
    );
    ui.clear(replicasBox).append(
      ui.table({
        columns: [
          { key: "id", label: "Replica", render: (x) => h("span", { class: "mono" }, x.id) },
          { key: "state", label: "State", render: (x) => ui.stateBadge(x.state) },
          { key: "pid", label: "PID", get: (x) => (x.pid == null ? "" : String(x.pid)) },
          { key: "port", label: "Port", get: (x) => (x.port == null ? "" : String(x.port)) },
          { key: "revision", label: "Revision", get: (x) => String(x.revision || "").slice(0, 12) },
          { key: "restarts", label: "Restarts", num: true },
          { key: "started_at", label: "Started", get: (x) => fmt.time(x.started_at) },
          { key: "ready_at", label: "Ready", get: (x) => fmt.time(x.ready_at) },
          { key: "exit", label: "Last exit", get: (x) => (x.exit ? `${x.exit.name || x.exit.code}${x.exit.detail ? `: ${x.exit.detail}` : ""}` : x.not_ready || "") },
        ],
        rows: r.items,
        empty: "No replicas running.",
      }),
    );
    specBox.textContent = JSON.stringify(fn.spec, null, 2);
  };
  drawFunction();

  // ---- actions
  const scale = async () => {
    const r = fn.replicas;
    const values = await formDialog(
      ui,
      `Scale ${fn.name}`,
      [
        { name: "min", label: "Min replicas", type: "number", value: r.min, min: 0 },
        { name: "max", label: "Max replicas", type: "number", value: r.max, min: 0 },
      ],
      { ok: "Next" },
    );
    if (!values) return;
    const lo = Number(values.min);
    const hi = Number(values.max);
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi < lo) {
      ui.banner("Scale: min and max are whole numbers with 0 ≤ min ≤ max.");
      return;
    }
    const what = lo === hi ? `${lo} replica(s)` : `${lo}–${hi} replicas (autoscaled)`;
    if (!(await ui.confirm(`Scale ${fn.name} from ${r.min}–${r.max} to ${what}?`, { ok: "Scale" }))) return;
    // The scale endpoint changes only the counts: no build, no new version, no restarts.
    await ctx.api.put(`${path}/scale`, lo === hi ? { replicas: lo } : { minReplicas: lo, maxReplicas: hi });
    ui.banner(`Scaling ${fn.name} to ${what}.`, "info");
    await refreshFunction();
  };
  const redeploy = async () => {
    if (!(await ui.confirm(`Redeploy ${fn.name}? Its code and spec are built again (a cached build when unchanged) and the replicas replaced.`, { ok: "Redeploy" }))) return;
    await ctx.api.put(path, { spec: fn.spec });
    ui.banner(`Redeploying ${fn.name}.`, "info");
    await refreshFunction();
  };
  const remove = async () => {
    if (!(await ui.confirm(`Delete ${fn.name}? Its replicas stop and its code, builds and events are removed. This cannot be undone.`, { ok: "Delete", danger: true }))) return;
    stop(); // no more reads of a function about to go
    following = false;
    await ctx.api.del(path);
    ui.banner(`Deleted ${fn.name}.`, "info");
    ctx.navigate("#/functions");
  };
  const act = (fnAction) => async () => {
    try {
      await fnAction();
    } catch (err) {
      if (err?.status !== 401) console.warn("action failed", err); // api.js showed the banner
    }
  };
  actions.append(
    h("button", { id: "scale", onclick: act(scale) }, "Scale…"),
    h("button", { id: "redeploy", onclick: act(redeploy) }, "Redeploy"),
    h("button", { id: "delete", class: "danger", onclick: act(remove) }, "Delete"),
  );

  // ---- metrics
  let chart = null;
  const drawMetrics = async (m) => {
    const num = (label, value, id) => h("div", { class: "card metric" }, h("div", { class: "muted" }, label), h("div", { class: "big", id, style: { fontSize: "1.4em", fontWeight: 600 } }, value));
    const lp = lagParts(m);
    const byTrigger = Object.entries(m.totals?.by_trigger || {});
    put(metricsBox,
      h(
        "div",
        { class: "cards" },
        num("request rate", rate(m.request_rate), "m-rate"),
        num("error rate", pct(m.error_rate), "m-errors"),
        num("latency p50", ms(m.latency_ms?.p50), "m-p50"),
        num("latency p99", ms(m.latency_ms?.p99), "m-p99"),
        num("in flight", fmt.int(m.in_flight ?? null) || "0", "m-inflight"),
        num("events", fmt.int(m.totals?.events ?? null) || "0", "m-events"),
        lp ? num("Kafka lag", lp.total == null ? "unknown" : fmt.int(lp.total), "m-lag") : null,
      ),
      h("p", { class: "muted" }, `over ${m.window_s ? fmt.duration(m.window_s) : "the window"} (latency: ${m.latency_ms?.window || "recent"}); ${m.replicas?.length || 0} replica(s) scraped`),
      byTrigger.length
        ? ui.table({
            columns: [
              { key: "trigger", label: "Trigger", get: ([k]) => k },
              ...["ok", "error", "timeout", "unavailable"].map((k) => ({ key: k, label: k, num: true, get: ([, v]) => v?.[k] ?? 0 })),
            ],
            rows: byTrigger,
          })
        : null,
    );
    if (lp && lp.parts.length) {
      metricsBox.append(
        h("h3", null, "Kafka lag per partition"),
        ui.table({
          cls: "kafka-partitions",
          columns: [
            { key: "group", label: "Group" },
            { key: "topic", label: "Topic" },
            { key: "partition", label: "Partition", num: true },
            { key: "end", label: "End offset", num: true },
            { key: "committed", label: "Committed", num: true, get: (p) => (p.committed == null ? "never" : p.committed) },
            { key: "lag", label: "Lag", num: true },
          ],
          rows: lp.parts,
        }),
      );
      const el = h("div", { class: "chart", style: { height: "220px" } });
      metricsBox.append(el);
      const option = {
        tooltip: { trigger: "axis" },
        grid: { left: 50, right: 20, top: 20, bottom: 30 },
        xAxis: { type: "category", data: lp.parts.map((p) => p.label) },
        yAxis: { type: "value", name: "lag" },
        series: [{ type: "bar", data: lp.parts.map((p) => p.lag ?? 0) }],
      };
      if (chart) chart.dispose();
      chart = await ui.chart(el, option, ctx);
    }
  };
  const errorsInMetrics = (m) => (m.kafka || []).filter((t) => t.error).map((t) => `${t.group}: ${t.error}`);
  poll(
    ctx,
    async () => {
      try {
        const m = await ctx.api.get(`${path}/metrics`, hasKafka(fn.spec) ? null : { kafka: 0 }, q);
        if (stopped || !ctx.alive()) return;
        await drawMetrics(m);
        for (const e of errorsInMetrics(m)) metricsBox.append(h("p", { class: "muted" }, `Kafka: ${e}`));
      } catch (err) {
        if (stopped || !ctx.alive()) return;
        ui.clear(metricsBox).append(ui.empty(err.status === 404 ? "Metrics are not available on this controller." : `Metrics not available: ${err.message}`));
      }
    },
    REFRESH_MS,
  );

  // ---- logs: the last lines of each replica, then (Follow) the new ones as they come
  const logPre = h("pre", { class: "run-log logs", id: "function-logs", style: { maxHeight: "420px", overflow: "auto" } });
  const replicaSel = h("select", { id: "log-replica", title: "replica" }, h("option", { value: "" }, "all replicas"));
  const followBox = h("input", { type: "checkbox", id: "follow" });
  const tailInput = h("input", { type: "number", id: "log-tail", value: 200, min: 1, max: 10000, style: { width: "6em" } });
  const status = h("span", { class: "muted log-status" });
  logsCard.append(
    h(
      "div",
      { class: "toolbar" },
      h("label", null, "Replica ", replicaSel),
      h("label", null, "Tail ", tailInput),
      h("button", { id: "log-refresh", onclick: () => tail() }, "Tail"),
      h("label", null, followBox, " Follow"),
      status,
    ),
    logPre,
  );
  const fillReplicas = () => {
    const have = new Set([...replicaSel.options].map((o) => o.value));
    for (const r of fn.replicas.items) if (!have.has(r.id)) replicaSel.append(h("option", { value: r.id }, r.id));
  };
  fillReplicas();
  let lineCount = 0;
  const showLines = (replicas, reset) => {
    if (reset) {
      logPre.textContent = "";
      lineCount = 0;
    }
    const many = replicas.length > 1;
    const text = [];
    for (const r of replicas) {
      if (r.error) text.push(`[${r.replica}] (${r.error})`);
      for (const ln of r.lines || []) text.push(many ? `[${r.replica}] ${ln}` : ln);
    }
    if (!text.length) {
      if (reset) logPre.textContent = "(no log lines)\n";
      return;
    }
    if (lineCount === 0) logPre.textContent = "";
    const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 4;
    logPre.append(document.createTextNode(text.join("\n") + "\n"));
    lineCount += text.length;
    if (lineCount > MAX_LOG_LINES) {
      const all = logPre.textContent.split("\n");
      logPre.textContent = all.slice(-MAX_LOG_LINES).join("\n");
      lineCount = MAX_LOG_LINES;
    }
    if (atBottom || reset) logPre.scrollTop = logPre.scrollHeight;
  };
  const tail = async () => {
    try {
      const a = await ctx.api.get(`${path}/logs`, { tail: Number(tailInput.value) || 200, replica: replicaSel.value || undefined }, q);
      if (stopped || !ctx.alive()) return;
      showLines(a.replicas || [], true);
      status.textContent = `tail at ${fmt.time(Date.now() / 1000)}`;
    } catch (err) {
      if (stopped) return;
      logPre.textContent = `Logs not available: ${err.message}`;
    }
  };
  // Follow polls the cursor API without holding a request open (a held request would keep
  // the page "busy" for tools and proxies; one poll a second is plenty for eyes).
  let cursor = null;
  let following = false;
  let followTimer = null;
  const followOnce = async () => {
    if (stopped || !following || !ctx.alive()) return;
    try {
      const query = { replica: replicaSel.value || undefined, tail: Number(tailInput.value) || 200 };
      if (cursor) query.cursor = cursor;
      const a = await ctx.api.get(`${path}/logs/follow`, query, q);
      if (stopped || !following || !ctx.alive()) return;
      showLines(a.replicas || [], cursor === null);
      cursor = a.cursor;
      status.textContent = `following · ${fmt.time(Date.now() / 1000)}`;
    } catch (err) {
      if (stopped) return;
      if (err.status === 404 && !cursor) {
        status.textContent = "follow is not available on this controller";
        following = false;
        followBox.checked = false;
        return;
      }
      status.textContent = `follow: ${err.message}`;
      if (err.status === 400) cursor = null; // a stale cursor: start again from the tail
    }
    if (following && ctx.alive()) followTimer = setTimeout(followOnce, FOLLOW_MS);
  };
  followBox.addEventListener("change", () => {
    following = followBox.checked;
    clearTimeout(followTimer);
    cursor = null;
    if (following) followOnce();
    else status.textContent = "stopped";
  });
  replicaSel.addEventListener("change", () => {
    cursor = null;
    if (!following) tail();
  });
  ctx.onLeave(() => {
    following = false;
    clearTimeout(followTimer);
  });
  tail();

  // ---- events (appended with the `after` cursor) and builds
  let lastEvent = 0;
  const events = [];
  const drawEvents = () => {
    ui.clear(eventsBox).append(
      ui.table({
        cls: "events",
        columns: [
          { key: "time", label: "Time", get: (e) => fmt.time(e.time) },
          { key: "kind", label: "Kind", render: (e) => h("span", { class: `badge event-${e.kind}` }, e.kind) },
          { key: "replica", label: "Replica", render: (e) => h("span", { class: "mono" }, e.replica || "") },
          { key: "message", label: "Message" },
        ],
        rows: events.slice().reverse().slice(0, 200),
        empty: "No events.",
      }),
    );
  };
  const refreshEvents = async () => {
    const a = await ctx.api.get(`${path}/events`, { after: lastEvent, limit: 500 }, q);
    if (stopped || !ctx.alive()) return;
    const fresh = a.events || [];
    if (fresh.length || !lastEvent) {
      events.push(...fresh);
      if (fresh.length) lastEvent = fresh[fresh.length - 1].id;
      drawEvents();
    }
  };
  const refreshBuilds = async () => {
    const a = await ctx.api.get(`${path}/builds`, null, q);
    if (stopped || !ctx.alive()) return;
    ui.clear(buildsBox).append(
      ui.table({
        cls: "builds",
        columns: [
          { key: "version", label: "Version", num: true },
          { key: "state", label: "State", render: (b) => ui.stateBadge(b.state) },
          { key: "platform", label: "Platform" },
          { key: "cached", label: "Cached", get: (b) => (b.cached ? "yes" : "no") },
          { key: "content_hash", label: "Content", render: (b) => h("span", { class: "mono" }, String(b.content_hash || "").slice(0, 12)) },
          { key: "started_at", label: "Started", get: (b) => fmt.time(b.started_at) },
          { key: "duration_s", label: "Took", get: (b) => fmt.duration(b.duration_s) },
          { key: "message", label: "Message" },
          { key: "log", label: "Log", render: (b) => h("a", { href: `/api/builds/${encodeURIComponent(b.id)}/log`, target: "_blank", rel: "noopener" }, "log") },
        ],
        rows: a.builds || [],
        empty: "No builds.",
      }),
    );
  };

  async function refreshFunction() {
    try {
      fn = await ctx.api.get(path, null, q);
    } catch (err) {
      if (stopped) return;
      if (err.status === 404) {
        put(summary, ui.errorBox(`Function ${name} no longer exists.`));
        return;
      }
      throw err;
    }
    if (stopped || !ctx.alive()) return;
    drawFunction();
    fillReplicas();
    await Promise.all([refreshEvents(), refreshBuilds()]);
  }
  await Promise.all([refreshEvents(), refreshBuilds()]).catch((err) => {
    if (stopped) return;
    eventsBox.replaceChildren(ui.errorBox(err));
  });
  poll(ctx, async () => {
    await new Promise((r) => setTimeout(r, REFRESH_MS));
    if (!stopped && ctx.alive()) await refreshFunction();
  }, 0);
}
