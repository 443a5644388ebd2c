// The runs table: search, filters (project, state, labels, params, results, time), sort by any
// column on the server, a column chooser kept in localStorage, pages of 25-500 rows (the server
// pages, so 100,000 runs cost what one page costs), select runs → compare.
//
// The page's state lives in the hash (#/runs?q=&project=&state=&since=&f=params.lr>0.1&sort=
// &order=&offset=&limit=) so a filtered view can be bookmarked; it is rewritten with
// history.replaceState, so typing does not re-render the page.

const FILTER_RE = /^\s*(params?|results?|labels?)\.([^<>=!\s]+)\s*(>=|<=|!=|==|=|>|<)\s*(.+?)\s*$/;
const OPS = { "=": "eq", "==": "eq", "!=": "ne", ">": "gt", ">=": "ge", "<": "lt", "<=": "le" };
const SINCE = [
  ["", "any time"],
  ["1h", "last hour", 3600],
  ["24h", "last 24 h", 86400],
  ["7d", "last 7 days", 7 * 86400],
  ["30d", "last 30 days", 30 * 86400],
  ["90d", "last 90 days", 90 * 86400],
];
const STATES = ["", "created", "running", "completed", "error", "aborted"];
const FIXED = ["name", "uid", "project", "state", "start", "duration", "labels"];
const DEFAULT_FIXED = ["name", "uid", "state", "start", "duration"];
const PREF_COLS = "runs.columns";
const LEGACY_FETCH = 1000; // the old /api/runs has no offset: fetch this many, page here

export function parseFilter(text) {
  const m = FILTER_RE.exec(text);
  if (!m) return null;
  let [, group, key, op, value] = m;
  group = group.replace(/s$/, "") + "s"; // param/params → params
  if (group === "labels" && OPS[op] !== "eq") return null; // labels match exactly
  return { group, key, op: OPS[op], sym: op === "==" ? "=" : op, value: value.replace(/^["']|["']$/g, "") };
}

function filterText(f) {
  return `${f.group}.${f.key}${f.sym}${f.value}`;
}

function readState(query) {
  const num = (k, d) => {
    const v = Number(query.get(k));
    return Number.isFinite(v) && v >= 0 && query.get(k) !== null ? v : d;
  };
  return {
    q: query.get("q") || "",
    project: query.get("project") || "",
    state: query.get("state") || "",
    since: query.get("since") || "",
    filters: query.getAll("f").map(parseFilter).filter(Boolean),
    sort: query.get("sort") || "start",
    order: query.get("order") === "asc" ? "asc" : "desc",
    offset: num("offset", 0),
    limit: Math.min(num("limit", 50) || 50, 500),
  };
}

function writeState(st) {
  const qs = new URLSearchParams();
  for (const k of ["q", "project", "state", "since"]) if (st[k]) qs.set(k, st[k]);
  for (const f of st.filters) qs.append("f", filterText(f));
  if (st.sort !== "start") qs.set("sort", st.sort);
  if (st.order !== "desc") qs.set("order", st.order);
  if (st.offset) qs.set("offset", String(st.offset));
  if (st.limit !== 50) qs.set("limit", String(st.limit));
  const s = qs.toString();
  history.replaceState(null, "", `#/runs${s ? "?" + s : ""}`);
}

function apiQuery(st, visible, trim) {
  const q = {
    q: st.q,
    project: st.project,
    state: st.state,
    sort: st.sort,
    order: st.order,
    limit: st.limit,
    offset: st.offset,
    label: [],
  };
  const since = SINCE.find(([k]) => k === st.since);
  if (since && since[2]) q.since = (Date.now() / 1000 - since[2]).toFixed(0);
  for (const f of st.filters) {
    if (f.group === "labels") q.label.push(`${f.key}=${f.value}`);
    else q[`${f.group === "params" ? "param" : "result"}.${f.key}`] = `${f.op}:${f.value}`;
  }
  if (trim) {
    // Only the shown params/results travel (a wide sweep has hundreds); "-" matches no key.
    const dyn = visible.filter((k) => k.startsWith("params.") || k.startsWith("results."));
    q.columns = dyn.length ? dyn.join(",") : "params.-";
  }
  return q;
}

// ---- the old /api/runs (no total, no offset, no param filters): the same view, computed here

function valueOf(run, key) {
  if (key === "start") return run.created_at;
  if (key.startsWith("params.")) return run.params?.[key.slice(7)];
  if (key.startsWith("results.")) return run.results?.[key.slice(8)];
  return run[key];
}

function compare(a, b) {
  const na = typeof a === "number";
  const nb = typeof b === "number";
  if (na && nb) return a - b;
  if (na !== nb) return na ? -1 : 1;
  return String(a).localeCompare(String(b));
}

function matches(run, f) {
  const bag = f.group === "labels" ? run.labels : run[f.group];
  const v = bag?.[f.key];
  if (v === undefined) return false;
  const want = Number(f.value);
  const cmp = typeof v === "number" && Number.isFinite(want) ? v - want : String(v).localeCompare(f.value);
  return { eq: cmp === 0, ne: cmp !== 0, gt: cmp > 0, ge: cmp >= 0, lt: cmp < 0, le: cmp <= 0 }[f.op];
}

function legacyView(all, st) {
  const since = SINCE.find(([k]) => k === st.since);
  const t0 = since && since[2] ? Date.now() / 1000 - since[2] : null;
  const q = st.q.toLowerCase();
  let rows = all.filter(
    (r) =>
      (!q || r.name.toLowerCase().includes(q) || r.uid.toLowerCase().includes(q)) &&
      (t0 === null || r.created_at >= t0) &&
      st.filters.every((f) => matches(r, f)),
  );
  const dir = st.order === "asc" ? 1 : -1;
  rows = rows
    .map((r) => [valueOf(r, st.sort), r])
    .sort(([a], [b]) => (a == null ? (b == null ? 0 : 1) : b == null ? -1 : dir * compare(a, b)))
    .map(([, r]) => r);
  return { runs: rows.slice(st.offset, st.offset + st.limit), total: rows.length };
}

function keysOf(runs, group) {
  const seen = new Set();
  for (const r of runs) for (const k of Object.keys(r[group] || {})) seen.add(k);
  return [...seen].sort();
}

// ---- the page

export async function render(root, params, ctx) {
  const { h, fmt, ui } = { h: ctx.ui.h, fmt: ctx.ui.fmt, ui: ctx.ui };
  const st = readState(params.query);
  const selected = new Set((params.query.get("selected") || "").split(",").filter(Boolean));
  let known = { params: [], results: [] };
  let legacy = null; // rows of the old API, when the server does not page
  let abort = null;
  const projects = new Set();

  const status = h("span", { class: "muted", id: "runs-status" });
  root.append(h("h1", null, "Runs"));

  // toolbar: search, project, state, time, filter expressions, column chooser, compare
  const search = h("input", { type: "search", id: "runs-q", placeholder: "search name or uid", value: st.q, size: 22 });
  const projList = h("datalist", { id: "runs-projects" });
  const project = h("input", { type: "text", id: "runs-project", list: "runs-projects", placeholder: "project", value: st.project, size: 12 });
  const state = h("select", { id: "runs-state" }, STATES.map((s) => h("option", { value: s, selected: s === st.state }, s || "any state")));
  const since = h("select", { id: "runs-since" }, SINCE.map(([k, label]) => h("option", { value: k, selected: k === st.since }, label)));
  const keyList = h("datalist", { id: "runs-keys" });
  const filterIn = h("input", {
    type: "text",
    id: "runs-filter",
    list: "runs-keys",
    size: 28,
    placeholder: "filter: params.lr>0.01, results.auc>=0.6, labels.k=v",
    title: "a column, an operator (= != > >= < <=) and a value; Enter adds it",
  });
  const chips = h("div", { class: "chips", id: "runs-filters" });
  const chooserHost = h("span");
  const compareBtn = h("button", { class: "primary", id: "runs-compare", disabled: true }, "Compare");
  const clearSel = h("button", { id: "runs-clear-selection", hidden: true }, "Clear selection");
  root.append(
    h(
      "div",
      { class: "toolbar" },
      search,
      project,
      projList,
      state,
      since,
      filterIn,
      keyList,
      h("span", { class: "grow" }),
      status,
      chooserHost,
      clearSel,
      compareBtn,
    ),
    chips,
  );
  const pagerTop = h("div");
  const tableHost = h("div", { id: "runs-table" }, ui.loading());
  const pagerBottom = h("div");
  root.append(pagerTop, tableHost, pagerBottom);

  const drawChips = () => {
    ui.clear(chips);
    st.filters.forEach((f, i) =>
      chips.appendChild(
        h(
          "span",
          { class: "chip" },
          filterText(f),
          h("button", { title: "remove", onclick: () => { st.filters.splice(i, 1); refresh(true); } }, "×"),
        ),
      ),
    );
  };

  const drawSelection = () => {
    compareBtn.disabled = selected.size < 2;
    compareBtn.textContent = selected.size ? `Compare ${selected.size}` : "Compare";
    clearSel.hidden = selected.size === 0;
  };
  compareBtn.addEventListener("click", () => ctx.navigate(`#/compare?uids=${[...selected].join(",")}`));
  clearSel.addEventListener("click", () => {
    selected.clear();
    drawSelection();
    draw(lastData);
  });

  const allColumns = () => [
    ...FIXED.map((k) => ({ key: k, group: "run" })),
    ...known.params.map((k) => ({ key: `params.${k}`, group: "params" })),
    ...known.results.map((k) => ({ key: `results.${k}`, group: "results" })),
  ];
  const visibleColumns = () => {
    const saved = ui.prefs.get(PREF_COLS);
    if (Array.isArray(saved)) return saved;
    // By default: the run's own columns and the first few params and results.
    return [
      ...DEFAULT_FIXED,
      ...known.params.slice(0, 8).map((k) => `params.${k}`),
      ...known.results.slice(0, 8).map((k) => `results.${k}`),
    ];
  };

  const drawChooser = () => {
    ui.clear(chooserHost);
    chooserHost.appendChild(
      ui.columnChooser({
        columns: allColumns(),
        visible: visibleColumns(),
        onChange: (vis) => {
          ui.prefs.set(PREF_COLS, vis);
          refresh(false);
        },
      }),
    );
    ui.clear(keyList);
    for (const c of allColumns()) if (c.group !== "run") keyList.appendChild(h("option", { value: `${c.key}>` }));
    for (const p of [...projects].sort()) if (!projList.querySelector(`option[value="${CSS.escape(p)}"]`)) projList.appendChild(h("option", { value: p }));
  };

  const column = (key) => {
    switch (key) {
      case "name":
        return {
          key,
          label: "name",
          sortKey: "name",
          render: (r) => {
            const a = ui.link(`#/runs/${encodeURIComponent(r.uid)}`, r.name || r.uid.slice(0, 8));
            const strategy = r.labels?.["hyper.strategy"];
            return strategy ? h("span", null, a, " ", h("span", { class: "badge sweep", title: `a ${strategy} sweep: its iterations are on its page` }, "sweep")) : a;
          },
        };
      case "uid":
        return { key, label: "uid", sortKey: null, render: (r) => h("span", { class: "mono", title: r.uid }, r.uid.slice(0, 10)) };
      case "project":
        return { key, label: "project", sortKey: null };
      case "state":
        return { key, label: "state", sortKey: "state", render: (r) => ui.stateBadge(r.state) };
      case "start":
        return { key, label: "start", sortKey: "start", num: true, render: (r) => h("span", { title: fmt.ago(r.created_at) }, fmt.time(r.created_at)) };
      case "duration":
        return {
          key,
          label: "duration",
          sortKey: null,
          num: true,
          get: (r) => (r.started_at ? (r.ended_at || Date.now() / 1000) - r.started_at : null),
          render: (r) => (r.started_at ? fmt.duration((r.ended_at || Date.now() / 1000) - r.started_at) : ""),
        };
      case "labels":
        return {
          key,
          label: "labels",
          sortKey: null,
          render: (r) => h("span", { title: Object.entries(r.labels || {}).map(([k, v]) => `${k}=${v}`).join("\n") }, Object.entries(r.labels || {}).slice(0, 3).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`))),
        };
      default: {
        const [group, ...rest] = key.split(".");
        const k = rest.join(".");
        return {
          key,
          label: k,
          title: key,
          sortKey: key,
          num: true,
          get: (r) => r[group]?.[k],
          render: (r) => {
            const v = r[group]?.[k];
            return typeof v === "number" ? fmt.num(v) : h("span", { class: "text" }, fmt.value(v));
          },
        };
      }
    }
  };

  let lastData = null;
  const draw = (data) => {
    if (!data) return;
    const vis = visibleColumns();
    const cols = vis.map(column);
    // A param/result column is numeric (right-aligned, monospace) when its values on this page are.
    for (const c of cols) {
      if (!c.key.includes(".")) continue;
      const vals = data.runs.map(c.get).filter((v) => v !== undefined && v !== null);
      c.num = vals.every((v) => typeof v === "number");
    }
    // A thin group row over params/results so a wide table stays readable.
    const tableEl = ui.table({
      columns: cols,
      rows: data.runs,
      sort: { key: st.sort, order: st.order },
      onSort: (key, order) => {
        st.sort = key;
        st.order = order;
        refresh(true);
      },
      rowKey: (r) => r.uid,
      selected,
      onSelect: drawSelection,
      rowClass: (r) => (selected.has(r.uid) ? "selected" : ""),
      empty: st.filters.length || st.q || st.state || st.project || st.since ? "No runs match these filters." : "No runs yet: `tickrun run …` tracks one here.",
      cls: "runs",
    });
    tableEl.querySelectorAll("th").forEach((th) => {
      const k = th.dataset.key || "";
      if (k.startsWith("params.")) th.classList.add("col-param");
      if (k.startsWith("results.")) th.classList.add("col-result");
    });
    ui.clear(tableHost).appendChild(tableEl);
    const pg = () =>
      ui.pager({
        offset: st.offset,
        limit: st.limit,
        total: data.total,
        capped: data.total_capped,
        count: data.runs.length,
        onChange: (offset, limit) => {
          st.offset = offset;
          if (limit) st.limit = limit;
          refresh(false);
        },
      });
    ui.clear(pagerTop).appendChild(pg());
    ui.clear(pagerBottom).appendChild(pg());
  };

  const learn = (runs, columns) => {
    for (const r of runs) projects.add(r.project);
    const before = known.params.length + known.results.length;
    if (columns) known = { params: [...columns.params], results: [...columns.results] };
    else {
      known = {
        params: [...new Set([...known.params, ...keysOf(runs, "params")])].sort(),
        results: [...new Set([...known.results, ...keysOf(runs, "results")])].sort(),
      };
    }
    if (known.params.length + known.results.length !== before || !chooserHost.firstChild) drawChooser();
  };

  const load = async () => {
    abort?.abort();
    abort = new AbortController();
    const signal = abort.signal;
    const t0 = performance.now();
    status.textContent = "loading…";
    let data;
    if (legacy) {
      data = legacyView(legacy, st);
    } else {
      // The first call learns the keys (the answer's columns) so it cannot trim to them yet.
      const trim = Array.isArray(ui.prefs.get(PREF_COLS)) || known.params.length + known.results.length > 0;
      const resp = await ctx.api.get("/api/runs", apiQuery(st, visibleColumns(), trim), { signal });
      if (typeof resp.total !== "number") {
        // The server predates paging: fetch one big page, filter and sort here.
        const all = await ctx.api.get("/api/runs", { project: st.project, state: st.state, limit: LEGACY_FETCH }, { signal });
        legacy = all.runs;
        learn(legacy, null);
        data = legacyView(legacy, st);
      } else {
        learn(resp.runs, resp.columns);
        data = resp;
      }
    }
    if (!ctx.alive() || signal.aborted) return;
    lastData = data;
    draw(data);
    const ms = performance.now() - t0;
    const n = data.total ?? data.runs.length;
    status.textContent = `${fmt.int(n)}${data.total_capped ? "+" : ""} run${n === 1 ? "" : "s"} · ${ms.toFixed(0)} ms`;
    root.dataset.loaded = "1";
  };

  const refresh = (resetOffset) => {
    if (resetOffset) st.offset = 0;
    writeState(st);
    drawChips();
    return load().catch((err) => {
      if (err?.name === "AbortError" || !ctx.alive()) return;
      status.textContent = "";
      ui.clear(tableHost).appendChild(ui.errorBox(err));
    });
  };

  const typed = ui.debounce(() => {
    st.q = search.value.trim();
    refresh(true);
  }, 250);
  search.addEventListener("input", typed);
  project.addEventListener("change", () => {
    st.project = project.value.trim();
    legacy = null; // the old API filters the project on the server
    refresh(true);
  });
  state.addEventListener("change", () => {
    st.state = state.value;
    legacy = null;
    refresh(true);
  });
  since.addEventListener("change", () => {
    st.since = since.value;
    refresh(true);
  });
  filterIn.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const f = parseFilter(filterIn.value);
    if (!f) {
      filterIn.setCustomValidity("expected e.g. params.lr>0.01 or labels.k=v");
      filterIn.reportValidity();
      return;
    }
    filterIn.setCustomValidity("");
    filterIn.value = "";
    st.filters.push(f);
    refresh(true);
  });
  filterIn.addEventListener("input", () => filterIn.setCustomValidity(""));
  ctx.onLeave(() => abort?.abort());

  drawSelection();
  await refresh(false); // the first page is drawn when render returns
}
