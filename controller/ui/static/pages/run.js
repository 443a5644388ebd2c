// One run (#/runs/<uid>[?iteration=N]): params, inputs (links to their artifacts), results,
// labels, logs, a sweep's iterations (the selected one marked, a result-vs-param chart) and the
// run's artifacts (plots inline).

import { artifactHash, imageUrl, storeHash } from "./artifact.js";

function scalarKeys(rows, group) {
  const keys = new Set();
  for (const r of rows) for (const [k, v] of Object.entries(r[group] || {})) if (typeof v !== "object" || v === null) keys.add(k);
  return [...keys];
}

// The params that differ between iterations: the swept ones (the rest are shared).
function sweptKeys(iterations) {
  const keys = scalarKeys(iterations, "params");
  return keys.filter((k) => new Set(iterations.map((r) => JSON.stringify(r.params?.[k]))).size > 1);
}

function numericKeys(rows, group) {
  return scalarKeys(rows, group).filter((k) => rows.some((r) => typeof r[group]?.[k] === "number"));
}

export async function render(root, params, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  const uid = params.path[0];
  const iteration = Number(params.query.get("iteration") || 0) || 0;
  root.append(h("div", { class: "crumbs" }, ui.link("#/runs", "Runs"), " / ", h("span", { class: "mono" }, uid)));
  const title = h("h1", null, "Run");
  root.append(title, ui.loading());
  const [detail, arts] = await Promise.all([
    ctx.api.get(`/api/runs/${encodeURIComponent(uid)}`, { iteration: iteration || undefined }),
    ctx.api.get("/api/artifacts", { uid, iteration, limit: 500 }),
  ]);
  if (!ctx.alive()) return;
  root.querySelector(".loading")?.remove();
  const run = detail.run;
  let iterations = detail.iterations || [];
  if (iteration > 0) {
    // An iteration's own page still shows its siblings, from the parent.
    iterations = (await ctx.api.get(`/api/runs/${encodeURIComponent(uid)}`)).iterations || [];
  }
  title.textContent = "";
  const badge = ui.stateBadge(run.state);
  title.append(run.name || run.uid, " ", badge);
  if (iteration) title.append(h("span", { class: "muted" }, `  iteration ${iteration}`));

  const dur = run.started_at ? (run.ended_at || Date.now() / 1000) - run.started_at : null;
  const item = (label, value) => (value === null || value === undefined || value === "" ? null : h("span", null, `${label} `, h("b", null, value)));
  root.append(
    h(
      "div",
      { class: "summary" },
      item("uid", h("span", { class: "mono" }, run.uid)),
      item("project", run.project),
      item("handler", run.handler),
      item("created", fmt.time(run.created_at)),
      item("duration", dur === null ? null : fmt.duration(dur)),
      item("host", run.host ? `${run.host}${run.pid ? ` pid ${run.pid}` : ""}` : null),
      run.best_iteration ? item("best iteration", ui.link(`#/runs/${uid}?iteration=${run.best_iteration}`, String(run.best_iteration))) : null,
      iteration ? ui.link(`#/runs/${uid}`, "↑ the sweep") : null,
    ),
  );

  if (run.error) root.append(ui.section("Error", h("pre", { class: "run-error" }, run.error)));

  const inputs = Object.entries(run.inputs || {}).map(([k, v]) => {
    const hash = storeHash(v);
    return [k, hash ? ui.link(hash, v) : h("span", { class: "mono" }, v)];
  });
  const labels = h(
    "div",
    { class: "chips" },
    Object.entries(run.labels || {}).map(([k, v]) =>
      h("span", { class: "label", title: `${k}=${v}` }, `${k}=${String(v).length > 24 ? String(v).slice(0, 12) + "…" : v}`),
    ),
  );
  root.append(
    h(
      "div",
      { class: "cards" },
      ui.section("Params", ui.kvTable(run.params, { empty: "no params" })),
      ui.section("Results", ui.kvTable(run.results, { empty: "no results yet" })),
      ui.section("Inputs", inputs.length ? ui.kvTable(Object.fromEntries(inputs)) : ui.empty("no inputs")),
      ui.section("Labels", Object.keys(run.labels || {}).length ? labels : ui.empty("no labels")),
    ),
  );

  if (iterations.length) root.append(iterationsSection(run, iterations, iteration, ctx));

  const allArts = arts.artifacts || [];
  const logArt = allArts.find((a) => a.kind === "log");
  // The log first: what the handler said (and, on failure, its traceback). Followed while the
  // run runs; when it ends, its state badge shows the end (the rest: reload the page).
  const onEnded = (ended) => badge.replaceWith(ui.stateBadge(ended.state));
  const sweep = !iteration && iterations.length > 0;
  root.append(logsSection(run, iteration, logArt, ctx, onEnded, sweep));
  root.append(artifactsSection(allArts, ctx));
}

function iterationsSection(run, iterations, current, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  const uid = run.uid;
  const best = run.best_iteration ?? null;
  const swept = sweptKeys(iterations);
  const results = scalarKeys(iterations, "results");
  const columns = [
    {
      key: "iteration",
      label: "iter",
      num: true,
      render: (r) =>
        h("span", null, r.iteration === best ? h("span", { class: "best-mark", title: "selected (best) iteration" }, "★ ") : null, ui.link(`#/runs/${uid}?iteration=${r.iteration}`, String(r.iteration))),
    },
    { key: "state", render: (r) => ui.stateBadge(r.state) },
    ...swept.map((k) => ({ key: `params.${k}`, label: k, title: `params.${k}`, num: true, get: (r) => r.params?.[k] })),
    ...results.map((k) => ({ key: `results.${k}`, label: k, title: `results.${k}`, num: true, get: (r) => r.results?.[k] })),
  ];
  for (const c of columns.slice(2)) c.num = iterations.every((r) => typeof c.get(r) === "number" || c.get(r) == null);
  let sort = { key: "iteration", order: "asc" };
  const host = h("div", { id: "iterations-table" });
  const draw = () => {
    const col = columns.find((c) => c.key === sort.key);
    const val = (r) => (col.get ? col.get(r) : r[col.key]);
    const rows = [...iterations].sort((a, b) => {
      const x = val(a);
      const y = val(b);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
      return sort.order === "asc" ? c : -c;
    });
    ui.clear(host).appendChild(
      ui.table({
        columns,
        rows,
        sort,
        onSort: (key, order) => {
          sort = { key, order };
          draw();
        },
        rowClass: (r) => [r.iteration === best ? "best" : "", r.iteration === current ? "selected" : ""].join(" "),
      }),
    );
    const colHeads = host.querySelectorAll("th");
    colHeads.forEach((th) => {
      const k = th.dataset.key || "";
      if (k.startsWith("params.")) th.classList.add("col-param");
      if (k.startsWith("results.")) th.classList.add("col-result");
    });
  };
  draw();

  // Chart: a result against a param, one point per iteration (hover: the values; zoom: drag).
  const xs = swept.length ? swept : numericKeys(iterations, "params");
  const ys = numericKeys(iterations, "results");
  const chartEl = h("div", { class: "chart", id: "iterations-chart" });
  const xSel = h("select", { id: "chart-x" }, xs.map((k) => h("option", { value: k }, `params.${k}`)));
  const ySel = h("select", { id: "chart-y" }, ys.map((k) => h("option", { value: k, selected: k === (run.results?.selected_on || "accuracy") }, `results.${k}`)));
  let inst = null;
  const plot = async () => {
    if (!xs.length || !ys.length) return;
    const x = xSel.value;
    const y = ySel.value;
    const point = (r) => ({ value: [r.params?.[x], r.results?.[y]], name: `iteration ${r.iteration}`, iteration: r.iteration });
    const numericX = iterations.every((r) => typeof r.params?.[x] === "number");
    const option = {
      grid: { left: 70, right: 30, top: 30, bottom: 60 },
      tooltip: {
        trigger: "item",
        formatter: (p) => `${p.data.name}<br>${x} = ${fmt.value(p.data.value[0])}<br>${y} = ${fmt.num(p.data.value[1])}`,
      },
      xAxis: { type: numericX ? "value" : "category", name: x, nameLocation: "middle", nameGap: 28, scale: true, ...(numericX && logScale(iterations.map((r) => r.params?.[x])) ? { type: "log" } : {}) },
      yAxis: { type: "value", name: y, scale: true, axisLabel: { formatter: (v) => fmt.num(v) } },
      dataZoom: [{ type: "inside", xAxisIndex: 0 }, { type: "inside", yAxisIndex: 0 }, { type: "slider", xAxisIndex: 0, height: 16, bottom: 6 }],
      series: [
        {
          type: "scatter",
          symbolSize: 11,
          data: iterations.filter((r) => r.iteration !== best).map(point),
          name: "iterations",
        },
        {
          type: "scatter",
          symbol: "diamond",
          symbolSize: 16,
          data: iterations.filter((r) => r.iteration === best).map(point),
          name: "best",
          itemStyle: { color: "#dc2626" },
        },
      ],
      legend: { top: 0, right: 10 },
    };
    if (inst) inst.setOption(option, true);
    else {
      inst = await ui.chart(chartEl, option, ctx);
      inst.on("click", (p) => p.data?.iteration && ctx.navigate(`#/runs/${uid}?iteration=${p.data.iteration}`));
    }
    chartEl.dataset.points = String(iterations.length);
  };
  xSel.addEventListener("change", plot);
  ySel.addEventListener("change", plot);
  plot().catch((err) => chartEl.replaceWith(ui.errorBox(err)));

  return ui.section(
    `Iterations (${iterations.length})`,
    h("div", { class: "toolbar" }, ui.link(`#/compare?uids=${uid}`, "Compare iterations · parallel coordinates")),
    host,
    xs.length && ys.length ? h("div", null, h("div", { class: "toolbar" }, h("label", null, "x ", xSel), h("label", null, "y ", ySel)), chartEl) : null,
  );
}

// A positive numeric grid spanning more than two decades reads better on a log axis.
function logScale(values) {
  const nums = values.filter((v) => typeof v === "number");
  if (nums.length < 2 || nums.some((v) => v <= 0)) return false;
  return Math.max(...nums) / Math.min(...nums) >= 100;
}

function artifactsSection(arts, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  if (!arts.length) return ui.section("Artifacts", ui.empty("no artifacts"));
  const table = ui.table({
    columns: [
      { key: "key", render: (a) => ui.link(artifactHash(a), a.key) },
      { key: "kind", render: (a) => h("span", { class: "badge" }, a.kind) },
      { key: "format" },
      { key: "size_bytes", label: "size", num: true, render: (a) => fmt.bytes(a.size_bytes) },
      { key: "summary", label: "summary", render: (a) => artifactSummary(a, ctx) },
    ],
    rows: arts,
  });
  const plots = arts.filter((a) => a.kind === "plot" && imageUrl(a));
  const gallery = plots.length
    ? h(
        "div",
        { class: "gallery" },
        plots.map((a) =>
          h("figure", null, h("a", { href: artifactHash(a) }, h("img", { src: imageUrl(a), alt: a.key, loading: "lazy", class: "preview-img" })), h("figcaption", null, a.key)),
        ),
      )
    : null;
  return ui.section(`Artifacts (${arts.length})`, table, gallery);
}

function artifactSummary(a, ctx) {
  const { fmt } = ctx.ui;
  const m = a.meta || {};
  if (a.kind === "dataset" || a.kind === "table") {
    const cols = Array.isArray(m.columns) ? m.columns.length : m.columns;
    return [m.rows != null ? `${fmt.int(m.rows)} rows` : null, cols != null ? `${cols} columns` : null].filter(Boolean).join(" × ");
  }
  if (a.kind === "model") {
    const metrics = Object.entries(m.metrics || {}).slice(0, 3).map(([k, v]) => `${k}=${fmt.num(v)}`);
    return [m.framework, ...metrics].filter(Boolean).join(" · ");
  }
  return m.from_iteration ? `from iteration ${m.from_iteration}` : "";
}

// The run's own log (GET /api/runs/{uid}/log: what context.logger wrote, prints in a job's
// process, a failure's traceback), scrollable and downloadable; the lifecycle below it.
// A finished run's log is fetched only when it has a log artifact (a 404 would be a console
// error). A created/running run's log is followed: the runtime publishes it every ~2 s while it
// has new lines, the API answers X-Tickrun-Log: live (an empty 200 before the first line) until
// the log is final (empty=1: an empty 200 for a run that ended logging nothing). Each poll replaces the text when it changed and keeps the view at the end
// unless the reader scrolled up; a "live" marker shows meanwhile; polling stops at the final
// log (or when the page is left).
const LOG_POLL_MS = 2000;

function logsSection(run, iteration, logArt, ctx, onEnded, sweep = false) {
  const { h } = ctx.ui;
  const ui = ctx.ui;
  const q = iteration ? `?iteration=${iteration}` : "";
  const url = `/api/runs/${encodeURIComponent(run.uid)}/log${q}`;
  const body = h("div", { id: "run-log-body" });
  const timelinePre = h("pre", { class: "run-log" }, timeline(run, ctx));
  const following = run.state === "running" || run.state === "created";
  if (logArt || following) {
    const m = logArt?.meta || {};
    const count = h("span", { class: "muted", id: "run-log-lines" }, `${ui.fmt.int(m.lines ?? 0)} lines`);
    const marker = following ? h("span", { class: "badge state-running", id: "run-log-live", title: `following the log: fetched every ${LOG_POLL_MS / 1000} s until the run ends` }, "● live") : null;
    const truncated = h("span", { class: "muted", id: "run-log-truncated", hidden: !m.truncated }, m.truncated ? truncatedText(m.dropped, ui) : "");
    const status = h("span", { class: "muted", id: "run-log-status" });
    const info = h(
      "div",
      { class: "toolbar" },
      marker,
      count,
      m.from_iteration ? h("span", { class: "muted" }, ` · from the best iteration ${m.from_iteration}`) : null,
      truncated,
      status,
      h("a", { href: `${url}${q ? "&" : "?"}download=1`, id: "run-log-download", download: "" }, "Download"),
    );
    const pre = h("pre", { class: "run-log-text", id: "run-log" }, following ? "" : "loading…");
    // A running sweep has no log of its own: the best iteration's is stored when it ends.
    const wait = sweep ? "A sweep's log is its best iteration's, shown when the sweep ends; each iteration's log follows on its page (the iterations table)." : "Waiting for the run's first log line…";
    const waiting = following ? h("div", { class: "muted", id: "run-log-waiting" }, wait) : null;
    body.append(info, waiting, pre);
    if (waiting) pre.hidden = true;

    let stopped = false;
    let timer = null;
    let first = true;
    ctx.onLeave(() => {
      stopped = true;
      clearTimeout(timer);
    });
    const show = (text, mode) => {
      if (text || !following) {
        waiting?.remove();
        pre.hidden = false;
      } else if (mode === "final") {
        waiting.textContent = "This run logged nothing.";
      }
      if (first || text !== pre.textContent) {
        // At the end (or nothing to scroll yet): stay at the end as lines arrive.
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = text;
        if (first || atBottom) pre.scrollTop = pre.scrollHeight; // the end first: where a failure is
        if (following) {
          // While live, the counts come from the text (its record's meta is from the last publish).
          const dropped = Number(/^\[tickrun: (\d+) earlier lines dropped/.exec(text)?.[1] || 0);
          const lines = text ? text.split("\n").length - 1 - (dropped ? 1 : 0) : 0;
          count.textContent = `${ui.fmt.int(lines)} lines`;
          truncated.hidden = !dropped;
          truncated.textContent = dropped ? truncatedText(dropped, ui) : "";
        }
      }
      first = false;
      pre.dataset.ready = "1";
      pre.dataset.state = mode;
    };
    const ended = async () => {
      marker?.remove();
      if (!following) return;
      ui.clear(status).append(" · the run has ended: ", h("button", { class: "link", id: "run-log-reload", onclick: () => ctx.navigate(location.hash) }, "reload"), " for its results and artifacts");
      try {
        const detail = await ctx.api.get(`/api/runs/${encodeURIComponent(run.uid)}`, { iteration: iteration || undefined }, { quiet: true });
        if (stopped || !ctx.alive()) return;
        timelinePre.textContent = timeline(detail.run, ctx);
        onEnded?.(detail.run);
      } catch {
        // The log is shown; the badge stays as it was.
      }
    };
    const poll = async () => {
      if (stopped || !ctx.alive()) return;
      try {
        // empty=1: a run with no log answers an empty 200 (not a 404, a console error) when it
        // ends without logging anything while followed.
        const resp = await ctx.api.request("GET", url, { raw: true, quiet: following && !first, query: following ? { empty: 1 } : undefined });
        const mode = resp.headers.get("X-Tickrun-Log") === "live" ? "live" : "final";
        const text = await resp.text();
        if (stopped || !ctx.alive()) return;
        show(text, mode);
        if (mode === "live") {
          status.textContent = "";
          timer = setTimeout(poll, LOG_POLL_MS);
        } else {
          await ended();
        }
      } catch (err) {
        if (stopped || !ctx.alive()) return;
        if (following && !first && err.status !== 404) {
          // A hiccup of the network or the controller: say so, try again.
          status.textContent = ` · ${err.message}; retrying`;
          timer = setTimeout(poll, LOG_POLL_MS);
          return;
        }
        pre.hidden = false;
        waiting?.remove();
        pre.replaceWith(ui.errorBox(err));
      }
    };
    poll();
  } else {
    body.append(ui.empty("This run logged nothing."));
  }
  return ui.section("Log", body, h("h3", { class: "muted" }, "Timeline"), timelinePre);
}

function truncatedText(dropped, ui) {
  return ` · the first ${ui.fmt.int(dropped)} lines were dropped (the log keeps the last 10,000 lines / 1 MiB)`;
}

function timeline(run, ctx) {
  const lines = [];
  lines.push(`${ctx.ui.fmt.time(run.created_at)}  created  ${run.name || run.uid}`);
  if (run.started_at) lines.push(`${ctx.ui.fmt.time(run.started_at)}  started  on ${run.host || "?"}${run.pid ? ` (pid ${run.pid})` : ""}`);
  if (run.heartbeat_at && run.state === "running") lines.push(`${ctx.ui.fmt.time(run.heartbeat_at)}  last heartbeat`);
  if (run.ended_at) lines.push(`${ctx.ui.fmt.time(run.ended_at)}  ${run.state}${run.error ? `: ${run.error}` : ""}`);
  return lines.join("\n");
}
