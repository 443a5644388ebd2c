// Pipelines: #/pipelines lists pipeline runs (runs labelled tickrun.kind=pipeline) with their
// step counts; #/pipelines/<run uid> draws the run's graph (from its `graph` result) with each
// step's state, as an ECharts graph laid out by dependency depth, plus the steps table.
// A running pipeline refreshes every 3 s.

import { poll, put } from "./ops_common.js";

const STATE_COLORS = {
  completed: "#16a34a",
  cached: "#0891b2",
  running: "#2563eb",
  pending: "#9ca3af",
  skipped: "#d97706",
  error: "#dc2626",
};
const PAGE = 50;

export async function render(root, params, ctx) {
  return params.path.length ? renderRun(root, params.path[0], ctx) : renderList(root, params, ctx);
}

async function renderList(root, params, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  root.append(h("h1", null, "Pipelines"));
  const body = h("div", null, ui.loading());
  root.append(body);
  let offset = Number(params.query.get("offset") || 0) || 0;
  let limit = PAGE;
  const load = async () => {
    const a = await ctx.api.get("/api/runs", { label: "tickrun.kind=pipeline", limit, offset, sort: "start", order: "desc" });
    if (!ctx.alive()) return;
    const runs = a.runs || [];
    const count = (r, s) => r.results?.[`steps_${s}`];
    const total = (r) => r.results?.graph?.nodes?.length;
    ui.clear(body).append(
      ui.table({
        cls: "pipelines",
        columns: [
          { key: "pipeline", label: "Pipeline", render: (r) => ui.link(`#/pipelines/${encodeURIComponent(r.uid)}`, r.labels?.["tickrun.pipeline"] || r.name || r.uid) },
          { key: "uid", label: "Run", render: (r) => ui.link(`#/runs/${encodeURIComponent(r.uid)}`, r.uid.slice(0, 10), { class: "mono" }) },
          { key: "project", label: "Project" },
          { key: "state", label: "State", render: (r) => ui.stateBadge(r.state) },
          { key: "steps", label: "Steps", num: true, get: (r) => total(r) ?? "" },
          { key: "ok", label: "Completed", num: true, get: (r) => count(r, "completed") ?? "" },
          { key: "cached", label: "Cached", num: true, get: (r) => count(r, "cached") ?? "" },
          { key: "error", label: "Failed", num: true, get: (r) => count(r, "error") ?? "" },
          { key: "skipped", label: "Skipped", num: true, get: (r) => count(r, "skipped") ?? "" },
          { key: "schedule", label: "Schedule", get: (r) => r.labels?.["tickrun.schedule"] || "" },
          { key: "created_at", label: "Started", get: (r) => fmt.time(r.created_at) },
          { key: "took", label: "Took", get: (r) => (r.ended_at && r.started_at ? fmt.duration(r.ended_at - r.started_at) : "") },
        ],
        rows: runs,
        empty: "No pipeline runs yet. Run one with `tickrun pipeline run FILE.py`.",
      }),
      ui.pager({
        offset,
        limit,
        total: a.total ?? null,
        capped: a.total_capped,
        count: runs.length,
        onChange: (o, l) => {
          offset = o;
          if (l) limit = l;
          load();
        },
      }),
    );
  };
  await load();
}

// Layers by longest path from a root; order within a layer as defined.
function layout(nodes, edges) {
  const ups = new Map(nodes.map((n) => [n.name, []]));
  for (const [a, b] of edges) ups.get(b)?.push(a);
  const depth = new Map();
  const visit = (n, seen = new Set()) => {
    if (depth.has(n)) return depth.get(n);
    if (seen.has(n)) return 0;
    seen.add(n);
    const d = Math.max(-1, ...(ups.get(n) || []).map((u) => visit(u, seen))) + 1;
    depth.set(n, d);
    return d;
  };
  nodes.forEach((n) => visit(n.name));
  const rows = new Map();
  const pos = new Map();
  for (const n of nodes) {
    const d = depth.get(n.name);
    const i = rows.get(d) || 0;
    rows.set(d, i + 1);
    pos.set(n.name, { x: d, y: i });
  }
  return { pos, layers: Math.max(0, ...depth.values()) + 1, height: Math.max(1, ...rows.values()) };
}

async function renderRun(root, uid, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  root.append(h("div", { class: "crumbs" }, ui.link("#/pipelines", "Pipelines"), " / ", h("span", { class: "mono" }, uid)));
  const title = h("h1", null, "Pipeline run");
  root.append(title);
  const summary = h("div", { class: "summary" });
  const chartEl = h("div", { class: "chart tall pipeline-graph", style: { height: "360px" } });
  const legend = h("div", { class: "chips" }, Object.entries(STATE_COLORS).map(([s, c]) => h("span", { class: "chip" }, h("span", { style: { display: "inline-block", width: "10px", height: "10px", background: c, borderRadius: "50%", marginRight: "4px" } }), s)));
  const steps = h("div");
  root.append(summary, ui.section("Graph", legend, chartEl), ui.section("Steps", steps));
  let inst = null;

  const draw = async () => {
    const { run } = await ctx.api.get(`/api/runs/${encodeURIComponent(uid)}`, null, { quiet: inst !== null });
    if (!ctx.alive()) return false;
    const graph = run.results?.graph;
    ui.clear(title).append(run.labels?.["tickrun.pipeline"] || run.name || "Pipeline run", " ", ui.stateBadge(run.state));
    put(summary, 
      h("span", null, "run ", ui.link(`#/runs/${encodeURIComponent(uid)}`, uid, { class: "mono" })),
      h("span", null, "project ", h("b", null, run.project)),
      h("span", null, "started ", h("b", null, fmt.time(run.created_at))),
      run.ended_at && run.started_at ? h("span", null, "took ", h("b", null, fmt.duration(run.ended_at - run.started_at))) : null,
      run.error ? h("span", { class: "error-text" }, run.error) : null,
    );
    if (!graph || !Array.isArray(graph.nodes)) {
      chartEl.replaceWith(ui.empty("This run has no pipeline graph (yet)."));
      return run.state === "running";
    }
    const { pos, layers, height } = layout(graph.nodes, graph.edges || []);
    const option = {
      tooltip: {
        formatter: (p) =>
          p.dataType === "node"
            ? `<b>${p.data.name}</b><br>${p.data.step.target}<br>state: ${p.data.step.state}${p.data.step.attempts > 1 ? `<br>attempts: ${p.data.step.attempts}` : ""}${p.data.step.error ? `<br>${String(p.data.step.error).slice(0, 200)}` : ""}`
            : `${p.data.source} → ${p.data.target}`,
      },
      grid: { left: 20, right: 20, top: 10, bottom: 10 },
      xAxis: { type: "value", show: false, min: -0.5, max: layers - 0.5 },
      yAxis: { type: "value", show: false, min: -0.5, max: height - 0.5, inverse: true },
      series: [
        {
          type: "graph",
          layout: "none",
          // On hidden value axes: a layer per column, nodes at fixed pixel sizes (the graph's own
          // fit stretches a one-row pipeline's boxes).
          coordinateSystem: "cartesian2d",
          symbol: "roundRect",
          symbolSize: [130, 36],
          edgeSymbol: ["none", "arrow"],
          edgeSymbolSize: 9,
          label: { show: true, color: "#fff", fontWeight: 600, overflow: "truncate", width: 120 },
          lineStyle: { color: "#6b7280", width: 1.5, curveness: 0 },
          data: graph.nodes.map((n) => ({
            name: n.name,
            value: [pos.get(n.name).x, pos.get(n.name).y],
            step: n,
            itemStyle: { color: STATE_COLORS[n.state] || "#4b5563" },
          })),
          links: (graph.edges || []).map(([a, b]) => ({ source: a, target: b })),
        },
      ],
    };
    chartEl.style.height = `${Math.max(160, height * 80 + 60)}px`;
    // The graph fits its box: a short pipeline gets a narrow one, not the page's width.
    chartEl.style.maxWidth = `${layers * 240 + 160}px`;
    chartEl.dataset.layers = String(layers);
    if (inst) inst.setOption(option, true);
    else {
      inst = await ui.chart(chartEl, option, ctx);
      inst.on("click", (p) => {
        if (p.dataType === "node" && p.data.step.run_uid) ctx.navigate(`#/runs/${encodeURIComponent(p.data.step.run_uid)}`);
      });
    }
    ui.clear(steps).append(
      ui.table({
        cls: "steps",
        columns: [
          { key: "name", label: "Step", render: (n) => h("b", null, n.name) },
          { key: "state", label: "State", render: (n) => h("span", { class: `badge step-state state-${n.state === "cached" ? "completed" : n.state}`, dataset: { step: n.name } }, n.state) },
          { key: "target", label: "Target", render: (n) => h("span", { class: "mono" }, n.target) },
          { key: "run_uid", label: "Run", render: (n) => (n.run_uid ? ui.link(`#/runs/${encodeURIComponent(n.run_uid)}`, n.run_uid.slice(0, 10), { class: "mono" }) : "—") },
          { key: "attempts", label: "Attempts", num: true },
          { key: "took", label: "Took", get: (n) => (n.ended_at && n.started_at ? fmt.duration(n.ended_at - n.started_at) : "") },
          { key: "after", label: "After", get: (n) => (graph.edges || []).filter(([, b]) => b === n.name).map(([a]) => a).join(", ") },
          { key: "error", label: "Error", get: (n) => n.error || "" },
        ],
        rows: graph.nodes,
      }),
    );
    return run.state === "running" || run.state === "created" || run.state === "pending";
  };
  let running = await draw();
  if (running) {
    poll(
      ctx,
      async () => {
        await new Promise((r) => setTimeout(r, 3000));
        if (running && ctx.alive()) running = await draw();
      },
      0,
    );
  }
}
