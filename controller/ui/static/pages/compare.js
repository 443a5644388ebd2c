// Compare runs (#/compare?uids=a,b,c; an entry may be uid:iteration; one sweep's uid alone
// compares its iterations): params and results side by side with the differences highlighted,
// a chart of a result against a param, and parallel coordinates over the params that vary.

const enc = encodeURIComponent;
const MAX_RUNS = 2000;
const BATCH = 1000; // the API's uids limit a call
const BATCH_CHARS = 7000; // and the request line's: aiohttp refuses lines over 8 KiB

// Lower is better for results named as losses or errors; higher for everything else.
const LOWER_IS_BETTER = /(loss|error|err$|rmse|mse|mae|mape|drawdown|brier|nll|regret|cost)/i;
export function lowerIsBetter(key) {
  return LOWER_IS_BETTER.test(key);
}

// A positive numeric param spanning two decades or more (C = 0.01, 0.1, 1) reads on a log axis.
export function logAxis(values) {
  const nums = values.filter((v) => typeof v === "number");
  if (nums.length < 2 || nums.some((v) => v <= 0)) return false;
  return Math.max(...nums) / Math.min(...nums) >= 100;
}

// uids lists for GET /api/runs?uids=…: as few calls as the limits allow (one for 200 runs).
function batches(entries) {
  const out = [];
  let cur = [];
  let chars = 0;
  for (const e of entries) {
    if (cur.length && (cur.length >= BATCH || chars + e.length + 1 > BATCH_CHARS)) {
      out.push(cur);
      cur = [];
      chars = 0;
    }
    cur.push(e);
    chars += e.length + 1;
  }
  if (cur.length) out.push(cur);
  return out;
}

function label(r) {
  const base = r.name || r.uid.slice(0, 8);
  return r.iteration ? `${base} #${r.iteration}` : base;
}

function same(values) {
  const defined = values.map((v) => JSON.stringify(v ?? null));
  return defined.every((v) => v === defined[0]);
}

function isNumCol(values) {
  const present = values.filter((v) => v !== undefined && v !== null);
  return present.length > 0 && present.every((v) => typeof v === "number");
}

async function loadRuns(entries, ctx) {
  if (entries.length === 1 && !entries[0].includes(":")) {
    const d = await ctx.api.get(`/api/runs/${enc(entries[0])}`);
    if (d.iterations?.length) return { runs: [...d.iterations].sort((a, b) => a.iteration - b.iteration), sweep: d.run };
    return { runs: [d.run], sweep: null };
  }
  // One call for all of them (GET /api/runs?uids=a,b,c:N), not one per run.
  const pages = await Promise.all(batches(entries).map((b) => ctx.api.get("/api/runs", { uids: b.join(",") })));
  const byKey = new Map();
  for (const p of pages) for (const r of p.runs || []) byKey.set(`${r.uid}:${r.iteration || 0}`, r);
  const runs = [];
  const missing = [];
  for (const e of entries) {
    const [uid, it] = e.split(":");
    const r = byKey.get(`${uid}:${Number(it || 0)}`);
    if (r) runs.push(r);
    else missing.push(e);
  }
  return { runs, sweep: null, missing };
}

export async function render(root, params, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  const entries = [...new Set((params.query.get("uids") || "").split(",").map((s) => s.trim()).filter(Boolean))].slice(0, MAX_RUNS);
  root.append(h("div", { class: "crumbs" }, ui.link("#/runs", "Runs"), " / compare"));
  const title = h("h1", null, "Compare runs");
  root.append(title);
  if (!entries.length) {
    root.append(ui.empty("Select runs on the Runs page (tick two or more), then Compare."));
    return;
  }
  root.append(ui.loading(`Loading ${entries.length} run${entries.length > 1 ? "s" : ""}…`));
  // The chart library downloads and compiles while the runs are fetched, not after: on 200
  // runs that hides ~100 ms of the page's first draw. A failure here is retried by the chart.
  ui.loadECharts().catch(() => {});
  const { runs, sweep, missing = [] } = await loadRuns(entries, ctx);
  if (!ctx.alive()) return;
  root.querySelector(".loading")?.remove();
  if (missing.length) root.append(h("div", { class: "muted", id: "compare-missing" }, `not found: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ` and ${missing.length - 10} more` : ""}`));
  if (!runs.length) {
    root.append(ui.empty("None of these runs exist."));
    return;
  }
  if (sweep) {
    title.textContent = `Compare iterations of ${sweep.name || sweep.uid}`;
    root.append(h("div", { class: "summary" }, h("span", null, "sweep ", ui.link(`#/runs/${enc(sweep.uid)}`, h("b", { class: "mono" }, sweep.uid))), h("span", null, "best iteration ", h("b", null, String(sweep.best_iteration ?? "–")))));
  } else title.textContent = `Compare ${runs.length} runs`;
  const best = sweep?.best_iteration ?? null;

  const keys = (group) => {
    const s = new Set();
    for (const r of runs) for (const k of Object.keys(r[group] || {})) s.add(k);
    return [...s].sort();
  };
  const fields = [
    ...keys("params").map((k) => ({ group: "params", key: k })),
    ...keys("results").map((k) => ({ group: "results", key: k })),
  ].map((f) => ({ ...f, values: runs.map((r) => r[f.group]?.[f.key]) }));
  for (const f of fields) f.differs = !same(f.values);
  const varying = fields.filter((f) => f.differs);

  // ---- side-by-side table: one row per param/result, one column per run
  const onlyDiff = h("input", { type: "checkbox", id: "compare-only-diff", checked: ui.prefs.get("compare.onlyDiff", false) });
  const host = h("div", { id: "compare-table" });
  const drawTable = () => {
    ui.prefs.set("compare.onlyDiff", onlyDiff.checked);
    const shown = onlyDiff.checked ? varying : fields;
    const head = h(
      "tr",
      null,
      h("th", { class: "sticky-col" }, ""),
      runs.map((r) =>
        h(
          "th",
          { class: `num${r.iteration === best && best ? " best" : ""}`, title: `${r.uid}${r.iteration ? ` iteration ${r.iteration}` : ""}` },
          ui.link(`#/runs/${enc(r.uid)}${r.iteration ? `?iteration=${r.iteration}` : ""}`, label(r)),
          h("div", { class: "mono muted" }, r.uid.slice(0, 8)),
        ),
      ),
    );
    const body = h("tbody");
    let group = null;
    for (const f of shown) {
      if (f.group !== group) {
        group = f.group;
        body.appendChild(h("tr", { class: "group-row" }, h("th", { class: "sticky-col", colspan: 1 }, group), h("td", { colspan: runs.length })));
      }
      const numeric = isNumCol(f.values);
      const nums = f.values.filter((v) => typeof v === "number");
      // The best result by its name's rule (lowest for losses and errors, else highest).
      const ranked = f.group === "results" && numeric && f.differs;
      const lower = lowerIsBetter(f.key);
      const bestV = ranked ? (lower ? Math.min(...nums) : Math.max(...nums)) : null;
      const worstV = ranked ? (lower ? Math.max(...nums) : Math.min(...nums)) : null;
      body.appendChild(
        h(
          "tr",
          { class: f.differs ? "differs" : "", dataset: { field: `${f.group}.${f.key}` } },
          h("th", { class: `sticky-col ${f.group === "params" ? "col-param" : "col-result"}`, title: `${f.group}.${f.key}` }, f.key),
          f.values.map((v) =>
            h(
              "td",
              {
                class: [numeric ? "num" : "", f.differs ? "diff" : "", v === bestV ? "best-val" : "", v === worstV && worstV !== bestV ? "worst-val" : ""].join(" "),
                title: v === bestV ? `best (${lower ? "lowest" : "highest"})` : v === worstV ? `worst (${lower ? "highest" : "lowest"})` : undefined,
              },
              numeric ? fmt.num(v) : fmt.value(v),
            ),
          ),
        ),
      );
    }
    ui.clear(host).appendChild(
      shown.length
        ? h("div", { class: "table-wrap" }, h("table", { class: "grid compare" }, h("thead", null, head), body))
        : ui.empty(onlyDiff.checked ? "These runs have the same params and results." : "These runs have no params or results."),
    );
  };
  onlyDiff.addEventListener("change", drawTable);
  drawTable();
  root.append(
    ui.section(
      "Params and results",
      h("div", { class: "toolbar" }, h("label", null, onlyDiff, " only rows that differ"), h("span", { class: "muted" }, `${varying.length} of ${fields.length} differ · highlighted; bold = best result: lowest for losses and errors (names with loss, error, rmse, mse, mae, drawdown, brier…), else highest`)),
      host,
    ),
  );

  // ---- a result against a param
  // x candidates: params that vary, those every run has (then the numeric ones) first.
  const rank = (f) => (f.values.every((v) => v !== undefined) ? 0 : 2) + (isNumCol(f.values) ? 0 : 1);
  const numericParams = fields
    .filter((f) => f.group === "params" && f.differs && f.values.some((v) => v !== undefined))
    .sort((a, b) => rank(a) - rank(b));
  const numericResults = fields.filter((f) => f.group === "results" && isNumCol(f.values));
  if (numericParams.length && numericResults.length) {
    const pick = (list, want) => (list.find((f) => f.key === want) || list[0]).key;
    const xSel = h("select", { id: "compare-x" }, numericParams.map((f) => h("option", { value: f.key }, `params.${f.key}`)));
    const yDefault = pick(numericResults, sweep?.results?.selected_on || "accuracy");
    const ySel = h("select", { id: "compare-y" }, numericResults.map((f) => h("option", { value: f.key, selected: f.key === yDefault }, `results.${f.key}`)));
    const el = h("div", { class: "chart", id: "compare-chart" });
    let inst = null;
    const plot = async () => {
      const x = xSel.value;
      const y = ySel.value;
      const numericX = runs.every((r) => typeof r.params?.[x] === "number" || r.params?.[x] === undefined);
      const pts = runs
        .filter((r) => r.params?.[x] !== undefined && typeof r.results?.[y] === "number")
        .map((r) => ({ value: [numericX ? r.params[x] : String(r.params[x]), r.results[y]], name: label(r) }));
      const option = {
        grid: { left: 70, right: 30, top: 20, bottom: 60 },
        tooltip: { trigger: "item", formatter: (p) => `${p.data.name}<br>${x} = ${fmt.value(p.data.value[0])}<br>${y} = ${fmt.num(p.data.value[1])}` },
        xAxis: { type: numericX ? (logAxis(pts.map((p) => p.value[0])) ? "log" : "value") : "category", name: x, nameLocation: "middle", nameGap: 28, scale: true },
        yAxis: { type: "value", name: y, scale: true, axisLabel: { formatter: (v) => fmt.num(v) } },
        dataZoom: [{ type: "inside", xAxisIndex: 0 }, { type: "inside", yAxisIndex: 0 }, { type: "slider", xAxisIndex: 0, height: 16, bottom: 6 }],
        series: [{ type: "scatter", symbolSize: 11, data: pts }],
      };
      if (inst) inst.setOption(option, true);
      else inst = await ui.chart(el, option, ctx);
      el.dataset.points = String(pts.length);
    };
    xSel.addEventListener("change", plot);
    ySel.addEventListener("change", plot);
    root.append(ui.section("Result against param", h("div", { class: "toolbar" }, h("label", null, "x ", xSel), h("label", null, "y ", ySel)), el));
    plot().catch((err) => el.replaceWith(ui.errorBox(err)));
  }

  // ---- parallel coordinates: every varying param, then the numeric results; colour = a result
  const axes = [...fields.filter((f) => f.group === "params" && f.differs), ...numericResults.filter((f) => f.differs)];
  if (runs.length >= 2 && axes.length >= 2) {
    const colourBy = numericResults.find((f) => f.key === (sweep?.results?.selected_on || "accuracy")) || numericResults[0];
    const el = h("div", { class: "chart tall", id: "compare-parallel" });
    root.append(ui.section(`Parallel coordinates (${runs.length} runs, ${axes.length} axes${colourBy ? `; colour: ${colourBy.key}` : ""})`, el));
    const numericAxis = axes.map((f) => isNumCol(f.values)); // once per axis, not per run
    const parallelAxis = axes.map((f, i) => {
      const numeric = numericAxis[i];
      const axis = { dim: i, name: `${f.group === "params" ? "" : "▸ "}${f.key}`, nameTextStyle: { fontSize: 11 } };
      if (numeric) {
        axis.scale = true;
        if (logAxis(f.values)) axis.type = "log";
      } else {
        axis.type = "category";
        axis.data = [...new Set(f.values.map((v) => fmt.value(v)))];
      }
      return axis;
    });
    const data = runs.map((r, j) => ({
      name: label(r),
      value: axes.map((f, i) => (numericAxis[i] ? (f.values[j] ?? null) : fmt.value(f.values[j]))),
    }));
    const cIdx = colourBy ? axes.indexOf(colourBy) : -1;
    const cVals = colourBy ? colourBy.values.filter((v) => typeof v === "number") : [];
    const option = {
      tooltip: { trigger: "item", formatter: (p) => `<b>${p.data.name}</b><br>` + axes.map((f, i) => `${f.key}: ${fmt.value(p.data.value[i])}`).join("<br>") },
      parallelAxis,
      parallel: { left: 60, right: 90, top: 40, bottom: 30, parallelAxisDefault: { axisLabel: { formatter: (v) => (typeof v === "number" ? fmt.num(v) : v) } } },
      visualMap:
        cIdx >= 0 && cVals.length
          ? { type: "continuous", dimension: cIdx, min: Math.min(...cVals), max: Math.max(...cVals), right: 0, top: "middle", calculable: true, inRange: { color: lowerIsBetter(colourBy.key) ? ["#dc2626", "#2563eb", "#93c5fd"] : ["#93c5fd", "#2563eb", "#dc2626"] }, precision: 4, text: [colourBy.key, ""], textStyle: { fontSize: 11 } }
          : undefined,
      series: [{ type: "parallel", lineStyle: { width: 2, opacity: 0.6 }, emphasis: { lineStyle: { width: 4, opacity: 1 } }, data }],
    };
    ui.chart(el, option, ctx)
      .then(() => (el.dataset.lines = String(data.length)))
      .catch((err) => el.replaceWith(ui.errorBox(err)));
  }
}
