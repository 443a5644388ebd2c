// Monitoring (#/monitoring[?monitor=<schedule or name>&run=<uid>]): the tracked runs of
// hub://model_monitor. Per monitor (a schedule, else the run name): live performance over time
// (hit rate, PnL, AUC/accuracy), drift over time (max PSI, drifted features), drift per feature
// over the recent windows (PSI heatmap) and for one window (PSI and KS p-value per feature), all
// interactive ECharts charts; the runs table below.

const MAX_RUNS = 500;
const HEATMAP_RUNS = 30;
const PERF_KEYS = [
  ["hit_rate", "hit rate"],
  ["auc", "AUC"],
  ["accuracy", "accuracy"],
];
const PNL_KEYS = [
  ["pnl_net", "PnL net"],
  ["pnl_gross", "PnL gross"],
];

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

// "2025-01-30 23:00" from the window's end as logged, else the run's start.
function windowLabel(run) {
  const end = run.results?.window_end;
  if (typeof end === "string" && /^\d{4}-\d\d-\d\d/.test(end)) return end.replace("T", " ").slice(0, 16);
  const d = new Date(run.created_at * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function monitorOf(run) {
  return run.labels?.["tickrun.schedule"] || run.name || "model_monitor";
}

async function driftRows(ctx, run) {
  const base = `/api/artifacts/${encodeURIComponent(run.project)}/${encodeURIComponent(run.uid)}/${run.iteration || 0}/drift`;
  // Every feature's row (the table is one row per feature), not only the preview's first rows.
  try {
    const p = await ctx.api.get(`${base}/rows`, { limit: 1000 }, { quiet: true });
    if (Array.isArray(p?.rows)) return p.rows;
  } catch {
    // a store without the file any more: the record's preview below
  }
  try {
    const p = await ctx.api.get(`${base}/preview`, null, { quiet: true });
    if (Array.isArray(p?.rows)) return p.rows;
  } catch {
    // no preview endpoint or no table: the record's own preview below
  }
  try {
    const a = await ctx.api.get(base, null, { quiet: true });
    return Array.isArray(a?.artifact?.preview) ? a.artifact.preview : null;
  } catch {
    return null;
  }
}

export async function render(root, params, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  root.append(h("h1", null, "Monitoring"));
  const body = h("div", null, ui.loading());
  root.append(body);
  const a = await ctx.api.get("/api/runs", { label: "hub.item=model_monitor", limit: MAX_RUNS, sort: "start", order: "desc" });
  if (!ctx.alive()) return;
  const all = (a.runs || []).filter((r) => r.iteration === 0 || r.iteration === undefined);
  ui.clear(body);
  if (!all.length) {
    body.append(ui.empty("No model_monitor runs yet. Run hub://model_monitor (e.g. on a schedule: tickrun schedules create …) to see drift and live performance here."));
    return;
  }
  const groups = new Map();
  for (const r of all) {
    const k = monitorOf(r);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  const monitor = groups.has(params.query.get("monitor")) ? params.query.get("monitor") : [...groups.keys()][0];
  const runs = groups.get(monitor).slice().sort((x, y) => x.created_at - y.created_at); // oldest first
  const done = runs.filter((r) => r.state === "completed" && isNum(r.results?.max_psi));
  const pickedUid = params.query.get("run");
  const picked = done.find((r) => r.uid === pickedUid) || done[done.length - 1];

  const sel = h(
    "select",
    { id: "monitor-select", onchange: (e) => ctx.navigate(`#/monitoring?monitor=${encodeURIComponent(e.target.value)}`) },
    [...groups.entries()].map(([k, rs]) => h("option", { value: k, selected: k === monitor }, `${k} (${rs.length} runs)`)),
  );
  const last = done[done.length - 1];
  body.append(
    h("div", { class: "toolbar" }, h("label", null, "Monitor ", sel)),
    h(
      "div",
      { class: "summary" },
      h("span", null, "runs ", h("b", null, String(runs.length))),
      h("span", null, "alerts ", h("b", { id: "alert-count" }, String(runs.filter((r) => r.results?.alert).length))),
      last ? h("span", null, "last window ", h("b", null, fmt.time(last.created_at))) : null,
      last ? h("span", null, "features ", h("b", null, String(last.results.features_checked ?? ""))) : null,
      last && last.params?.model ? h("span", null, "model ", h("b", { class: "mono" }, String(last.params.model))) : null,
    ),
  );
  if (!done.length) {
    body.append(ui.empty("No completed monitoring run yet."));
    return;
  }

  const chartBox = (title, id, height = 300) => {
    const el = h("div", { class: "chart", id, style: { height: `${height}px` } });
    body.append(ui.section(title, el));
    return el;
  };
  const perfEl = chartBox("Live performance over time", "perf-chart");
  const driftEl = chartBox("Drift over time", "drift-time-chart", 260);
  const heatEl = chartBox("Drift per feature over time (PSI)", "drift-heatmap", 320);
  const featEl = chartBox(`Drift per feature — window ending ${windowLabel(picked)}`, "drift-feature-chart", 320);
  featEl.dataset.run = picked.uid;
  const tableBox = h("div");
  body.append(ui.section("Runs", tableBox));

  // One category per monitoring window (windows come at irregular times; a category axis keeps
  // each readable), labelled by the window's end when the run logged it.
  const xs = done.map(windowLabel);
  const series = (keys, axis) =>
    keys
      .filter(([k]) => done.some((r) => isNum(r.results?.[k])))
      .map(([k, label]) => ({ name: label, type: "line", yAxisIndex: axis, showSymbol: true, symbolSize: 7, connectNulls: false, data: done.map((r) => (isNum(r.results[k]) ? r.results[k] : null)) }));
  const alertPoints = done.map((r, i) => (r.results?.alert ? { name: "alert", coord: [i, 0], value: "!" } : null)).filter(Boolean);
  const timeAxis = { type: "category", data: xs, boundaryGap: true, axisLabel: { hideOverlap: true } };
  const zoom = done.length > 30 ? [{ type: "inside" }, { type: "slider", height: 18, bottom: 4 }] : [{ type: "inside" }];
  const openRun = (inst) =>
    inst.on("click", (p) => {
      const r = done[p.dataIndex];
      if (r) ctx.navigate(`#/monitoring?monitor=${encodeURIComponent(monitor)}&run=${encodeURIComponent(r.uid)}`);
    });

  const perfSeries = [...series(PERF_KEYS, 0), ...series(PNL_KEYS, 1)];
  if (perfSeries.length) {
    if (alertPoints.length && perfSeries[0]) perfSeries[0].markPoint = { symbol: "pin", symbolSize: 28, itemStyle: { color: "#dc2626" }, data: alertPoints };
    openRun(
      await ui.chart(
        perfEl,
        {
          tooltip: { trigger: "axis" },
          legend: { top: 0 },
          grid: { left: 55, right: 60, top: 35, bottom: 55 },
          xAxis: timeAxis,
          yAxis: [
            { type: "value", name: "rate", min: 0, max: 1 },
            { type: "value", name: "PnL", splitLine: { show: false } },
          ],
          dataZoom: zoom,
          series: perfSeries,
        },
        ctx,
      ),
    );
  } else {
    perfEl.replaceWith(ui.empty("No live performance in these runs (no price/outcome in the windows)."));
  }
  if (!ctx.alive()) return;

  const threshold = Number(picked.params?.psi_threshold ?? 0.25);
  openRun(
    await ui.chart(
      driftEl,
      {
        tooltip: { trigger: "axis" },
        legend: { top: 0 },
        grid: { left: 55, right: 60, top: 35, bottom: 55 },
        xAxis: timeAxis,
        yAxis: [
          { type: "value", name: "max PSI" },
          { type: "value", name: "drifted", minInterval: 1, splitLine: { show: false } },
        ],
        dataZoom: zoom,
        series: [
          { name: "max PSI", type: "line", data: done.map((r) => r.results.max_psi), markLine: { symbol: "none", lineStyle: { type: "dashed" }, data: [{ yAxis: threshold, name: "threshold" }] } },
          { name: "drifted features", type: "bar", yAxisIndex: 1, data: done.map((r) => r.results.drifted_count ?? 0) },
          ...(done.some((r) => isNum(r.results.prediction_psi)) ? [{ name: "prediction PSI", type: "line", data: done.map((r) => (isNum(r.results.prediction_psi) ? r.results.prediction_psi : null)) }] : []),
        ],
      },
      ctx,
    ),
  );
  if (!ctx.alive()) return;

  // Per-feature tables of the recent windows (one small request each).
  const recent = done.slice(-HEATMAP_RUNS);
  if (!recent.includes(picked)) recent.unshift(picked);
  const tables = await Promise.all(recent.map((r) => driftRows(ctx, r)));
  if (!ctx.alive()) return;
  const byRun = new Map(recent.map((r, i) => [r.uid, tables[i]]));
  const pickedRows = byRun.get(picked.uid);
  if (!pickedRows || !pickedRows.length) {
    featEl.replaceWith(ui.empty("The drift table of this run is not available."));
  } else {
    const rows = pickedRows.slice().sort((x, y) => (y.psi ?? 0) - (x.psi ?? 0));
    const names = rows.map((r) => r.feature);
    await ui.chart(
      featEl,
      {
        tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
        legend: { top: 0 },
        grid: { left: 55, right: 70, top: 35, bottom: 80 },
        xAxis: { type: "category", data: names, axisLabel: { rotate: 35, interval: 0 } },
        yAxis: [
          { type: "value", name: "PSI" },
          { type: "log", name: "KS p-value", min: 1e-12, max: 1, splitLine: { show: false }, axisLabel: { formatter: (v) => (v >= 0.01 ? String(v) : v.toExponential(0)) } },
        ],
        series: [
          {
            name: "PSI",
            type: "bar",
            data: rows.map((r) => ({ value: isNum(r.psi) ? r.psi : null, itemStyle: { color: r.drifted ? "#dc2626" : r.psi_drift ? "#d97706" : "#2563eb" } })),
            markLine: { symbol: "none", lineStyle: { type: "dashed" }, data: [{ yAxis: threshold, name: "PSI threshold" }] },
          },
          // Dark dots with a white ring: red ones vanished on a drifted (red) bar.
          { name: "KS p-value", type: "scatter", yAxisIndex: 1, symbolSize: 9, z: 3, itemStyle: { color: "#111827", borderColor: "#fff", borderWidth: 1.5 }, data: rows.map((r) => (isNum(r.ks_pvalue) ? Math.max(r.ks_pvalue, 1e-12) : null)) },
        ],
      },
      ctx,
    );
    featEl.after(
      ui.table({
        cls: "drift-table",
        columns: [
          { key: "feature", label: "Feature", render: (r) => h("b", { class: r.drifted ? "drifted" : "" }, r.feature) },
          { key: "psi", label: "PSI", num: true },
          { key: "ks_pvalue", label: "KS p", num: true },
          { key: "ks_statistic", label: "KS stat", num: true },
          { key: "reference_mean", label: "ref mean", num: true },
          { key: "current_mean", label: "cur mean", num: true },
          { key: "drifted", label: "Drifted", get: (r) => (r.drifted ? "yes" : "no") },
        ],
        rows,
      }),
    );
    if (isNum(picked.results.features_checked) && rows.length < picked.results.features_checked) {
      featEl.after(h("p", { class: "muted" }, `the ${rows.length} features with the largest PSI of ${picked.results.features_checked}`));
    }
  }
  const haveTables = recent.filter((r) => byRun.get(r.uid)?.length);
  if (haveTables.length) {
    const features = [...new Set(haveTables.flatMap((r) => byRun.get(r.uid).map((x) => x.feature)))];
    const data = [];
    let max = threshold;
    haveTables.forEach((r, x) => {
      for (const row of byRun.get(r.uid)) {
        const v = isNum(row.psi) ? row.psi : null;
        if (v !== null) max = Math.max(max, Math.min(v, 10));
        data.push([x, features.indexOf(row.feature), v === null ? null : Number(v.toFixed(4))]);
      }
    });
    heatEl.style.height = `${Math.max(220, features.length * 18 + 110)}px`;
    const hm = await ui.chart(
      heatEl,
      {
        tooltip: { position: "top", formatter: (p) => `${features[p.value[1]]}<br>${windowLabel(haveTables[p.value[0]])}<br>PSI ${p.value[2]}` },
        grid: { left: 140, right: 30, top: 10, bottom: 80 },
        xAxis: { type: "category", data: haveTables.map(windowLabel), axisLabel: { rotate: 35 } },
        yAxis: { type: "category", data: features },
        visualMap: { min: 0, precision: 3, max: Number(max.toFixed(3)), calculable: true, orient: "horizontal", left: "center", bottom: 0, itemHeight: 120, inRange: { color: ["#eff6ff", "#fde68a", "#dc2626"] } },
        series: [{ name: "PSI", type: "heatmap", data, emphasis: { itemStyle: { borderColor: "#111", borderWidth: 1 } } }],
      },
      ctx,
    );
    hm.on("click", (p) => {
      const r = haveTables[p.value?.[0]];
      if (r) ctx.navigate(`#/monitoring?monitor=${encodeURIComponent(monitor)}&run=${encodeURIComponent(r.uid)}`);
    });
  } else {
    heatEl.replaceWith(ui.empty("No drift tables in these runs."));
  }
  if (!ctx.alive()) return;

  tableBox.append(
    ui.table({
      cls: "monitor-runs",
      columns: [
        { key: "created_at", label: "Time", render: (r) => ui.link(`#/monitoring?monitor=${encodeURIComponent(monitor)}&run=${encodeURIComponent(r.uid)}`, fmt.time(r.created_at)) },
        { key: "uid", label: "Run", render: (r) => ui.link(`#/runs/${encodeURIComponent(r.uid)}`, r.uid.slice(0, 10), { class: "mono" }) },
        { key: "state", label: "State", render: (r) => ui.stateBadge(r.state) },
        { key: "alert", label: "Alert", render: (r) => (r.results?.alert ? h("span", { class: "badge state-error" }, "alert") : "") },
        { key: "drifted", label: "Drifted features", get: (r) => (r.results?.drifted_features || []).join(", ") },
        { key: "max_psi", label: "max PSI", num: true, get: (r) => r.results?.max_psi },
        { key: "hit_rate", label: "hit rate", num: true, get: (r) => r.results?.hit_rate },
        { key: "pnl_net", label: "PnL net", num: true, get: (r) => r.results?.pnl_net },
        { key: "rows", label: "rows", num: true, get: (r) => r.results?.current_rows },
        { key: "window_end", label: "Window end", get: (r) => r.results?.window_end || "" },
      ],
      rows: runs.slice().reverse(),
      rowClass: (r) => (r.uid === picked.uid ? "selected" : ""),
    }),
  );
}
