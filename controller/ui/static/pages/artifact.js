// One artifact (#/artifacts/<project>/<uid>/<iteration>/<key>), previewed by kind: plots as
// images, tables and datasets with their schema, statistics and first rows, models with their
// metadata, metrics and lineage (the run that made them, its inputs, registered versions),
// anything else as a download.

const enc = encodeURIComponent;

export function artifactPath(a) {
  return `${enc(a.project)}/${enc(a.uid)}/${a.iteration || 0}/${enc(a.key)}`;
}

export function artifactHash(a) {
  return `#/artifacts/${artifactPath(a)}`;
}

// store://project/uid[/iteration]/key → the artifact page (null for anything else).
export function storeHash(uri) {
  if (typeof uri !== "string" || !uri.startsWith("store://")) return null;
  const parts = uri.slice(8).split("/");
  if (parts.length === 3) return artifactHash({ project: parts[0], uid: parts[1], iteration: 0, key: parts[2] });
  if (parts.length === 4 && /^\d+$/.test(parts[2])) return artifactHash({ project: parts[0], uid: parts[1], iteration: Number(parts[2]), key: parts[3] });
  return null;
}

const IMAGE_FORMATS = new Set(["png", "jpg", "jpeg", "gif", "svg", "webp"]);
// Whether the server has the artifact bytes endpoints (controller/ui/API.md); off, the pages
// show no <img> or download link rather than a broken one.
const BYTES_API = true;

// The artifact's bytes (the preview endpoint answers an image with its bytes).
export function imageUrl(a) {
  if (!BYTES_API || !IMAGE_FORMATS.has(String(a.format || "").toLowerCase())) return null;
  return `/api/artifacts/${artifactPath(a)}/preview`;
}

export function downloadUrl(a) {
  return BYTES_API ? `/api/artifacts/${artifactPath(a)}/download` : null;
}

export async function render(root, params, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  const [project, uid, iterText, ...keyParts] = params.path;
  const key = keyParts.join("/");
  if (!project || !uid || !key) {
    root.append(h("h1", null, "Artifact"), ui.empty("An artifact address is #/artifacts/<project>/<run uid>/<iteration>/<key>."));
    return;
  }
  const iteration = Number(iterText) || 0;
  root.append(
    h(
      "div",
      { class: "crumbs" },
      ui.link("#/runs", "Runs"),
      " / ",
      ui.link(`#/runs/${enc(uid)}${iteration ? `?iteration=${iteration}` : ""}`, uid.slice(0, 10) + (iteration ? ` #${iteration}` : "")),
      " / ",
      key,
    ),
  );
  const title = h("h1", null, key);
  root.append(title, ui.loading());
  const a = (await ctx.api.get(`/api/artifacts/${artifactPath({ project, uid, iteration, key })}`)).artifact;
  if (!ctx.alive()) return;
  root.querySelector(".loading")?.remove();
  title.append(" ", h("span", { class: "badge" }, a.kind));
  root.append(
    h(
      "div",
      { class: "summary" },
      h("span", null, "uri ", h("b", { class: "mono" }, `store://${a.project}/${a.uid}/${a.iteration ? a.iteration + "/" : ""}${a.key}`)),
      h("span", null, "format ", h("b", null, a.format || "?")),
      h("span", null, "size ", h("b", null, fmt.bytes(a.size_bytes))),
      a.sha256 ? h("span", { title: a.sha256 }, "sha256 ", h("b", { class: "mono" }, a.sha256.slice(0, 12))) : null,
      h("span", null, "logged ", h("b", null, fmt.time(a.created_at))),
      a.meta?.from_iteration ? h("span", null, "from ", ui.link(artifactHash({ ...a, iteration: a.meta.from_iteration }), `iteration ${a.meta.from_iteration}`)) : null,
      downloadUrl(a) ? h("a", { href: downloadUrl(a), download: a.key, id: "artifact-download" }, "Download") : null,
    ),
  );
  const body = h("div", { class: `artifact-body kind-${a.kind}` });
  root.append(body);
  const preview = () => ctx.api.get(`/api/artifacts/${artifactPath(a)}/preview`, null, { quiet: true }).catch(() => null);
  if (imageUrl(a)) body.append(ui.section("Preview", h("img", { class: "preview-img", src: imageUrl(a), alt: a.key, id: "artifact-image" })));
  else if (a.kind === "dataset" || a.kind === "table") body.append(...tablePreview(a, await preview(), ctx));
  else if (a.kind === "model") body.append(...(await modelPreview(a, await preview(), ctx)));
  else body.append(ui.section("Preview", filePreview(a, await preview(), ctx)));
  if (!ctx.alive()) return;
  const labels = Object.entries(a.labels || {});
  if (labels.length) body.append(ui.section("Labels", ui.kvTable(a.labels)));
}

const STAT_KEYS = ["count", "mean", "std", "min", "25%", "50%", "75%", "max", "unique", "top", "freq"];
// Stored formats the rows endpoint pages (controller/ui/artifact_rows.py), and a page's size.
const PAGED_FORMATS = new Set(["csv", "parquet", "json"]);
const PAGE_ROWS = 50;

// The preview endpoint's answer (p) when it has one, else what the record carries.
function tablePreview(a, p, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  const m = a.meta || {};
  const obj = (x) => (x && typeof x === "object" && !Array.isArray(x) && Object.keys(x).length ? x : null);
  const rows = Array.isArray(p?.rows) ? p.rows : Array.isArray(a.preview) ? a.preview : [];
  const schema = obj(p?.schema) || obj(m.schema);
  const cols = Array.isArray(p?.columns) ? p.columns : Array.isArray(m.columns) ? m.columns : null;
  const names = schema ? Object.keys(schema) : cols || (rows.length ? Object.keys(rows[0]) : []);
  const stats = obj(p?.stats) || obj(m.stats) || {};
  const nRows = p?.shape?.rows ?? m.rows;
  const out = [];
  const shape = [nRows != null ? `${fmt.int(nRows)} rows` : null, `${fmt.int(names.length)} columns`].filter(Boolean).join(" × ");
  out.push(h("div", { class: "summary", id: "dataset-shape" }, h("b", null, shape)));

  // Schema and statistics: one row per column (a quant reads distributions column by column).
  const statCols = STAT_KEYS.filter((s) => names.some((n) => stats[n]?.[s] !== undefined));
  const schemaRows = names.map((n) => ({ name: n, dtype: schema?.[n] ?? "", ...(stats[n] || {}) }));
  out.push(
    ui.section(
      "Schema and statistics",
      ui.table({
        columns: [
          { key: "name", label: "column", render: (r) => h("span", { class: "mono" }, r.name) },
          { key: "dtype", label: "dtype", render: (r) => h("span", { class: "muted" }, r.dtype) },
          ...statCols.map((s) => ({ key: s, label: s, num: s !== "top", render: (r) => (typeof r[s] === "number" ? fmt.num(r[s]) : fmt.value(r[s])) })),
        ],
        rows: schemaRows,
        cls: "schema",
        empty: "no schema recorded",
      }),
    ),
  );

  // A chart of the numeric columns' spread (min, quartiles, max): hover for the values.
  const numeric = names.filter((n) => typeof stats[n]?.mean === "number" && typeof stats[n]?.["25%"] === "number");
  if (numeric.length) {
    const el = h("div", { class: "chart", id: "dataset-chart" });
    out.push(ui.section("Distribution by column (min, quartiles, max; standardised by column std)", el));
    const data = numeric.map((n) => {
      const s = stats[n];
      const z = (v) => (s.std ? (v - s.mean) / s.std : 0);
      return [z(s.min), z(s["25%"]), z(s["50%"]), z(s["75%"]), z(s.max)];
    });
    ui.chart(
      el,
      {
        grid: { left: 110, right: 20, top: 10, bottom: 30 },
        tooltip: {
          trigger: "item",
          formatter: (p) => {
            const s = stats[numeric[p.dataIndex]];
            return `<b>${numeric[p.dataIndex]}</b><br>` + ["min", "25%", "50%", "75%", "max", "mean", "std"].map((k) => `${k}: ${fmt.num(s[k])}`).join("<br>");
          },
        },
        yAxis: { type: "category", data: numeric, axisLabel: { fontFamily: "monospace", fontSize: 11 } },
        xAxis: { type: "value", name: "z", scale: true },
        dataZoom: [{ type: "inside", xAxisIndex: 0 }],
        series: [{ type: "boxplot", data, itemStyle: { color: "#e8f0fe", borderColor: "#2563eb" } }],
      },
      ctx,
    ).then(() => (el.dataset.ready = "1"));
    el.style.height = `${Math.max(200, numeric.length * 18 + 50)}px`;
  }

  // The first rows come with the record; later pages are read from the file (GET …/rows).
  const rowsTable = (page) =>
    ui.table({
      columns: (names.length ? names : Object.keys(page[0])).map((n) => ({
        key: n,
        label: n,
        num: page.every((r) => typeof r[n] === "number" || r[n] == null),
        get: (r) => r[n],
      })),
      rows: page,
      cls: "preview-rows",
    });
  const fmtName = String(p?.format || a.format || "").toLowerCase();
  const pageable = PAGED_FORMATS.has(fmtName) && typeof nRows === "number" && nRows > rows.length;
  if (!rows.length) {
    out.push(ui.section("First rows (0)", ui.empty("no rows were stored with this artifact")));
    return out;
  }
  if (!pageable) {
    out.push(ui.section(`First rows (${rows.length})`, rowsTable(rows)));
    return out;
  }
  const host = h("div", { id: "dataset-rows" }, rowsTable(rows));
  const where = h("span", { class: "muted", id: "dataset-rows-range" });
  const prev = h("button", { type: "button", id: "dataset-rows-prev" }, "‹ Previous");
  const next = h("button", { type: "button", id: "dataset-rows-next" }, "Next ›");
  let offset = 0;
  let shown = rows.length;
  const showRange = () => {
    where.textContent = `rows ${fmt.int(offset + 1)}–${fmt.int(offset + shown)} of ${fmt.int(nRows)}`;
    prev.disabled = offset === 0;
    next.disabled = offset + shown >= nRows;
  };
  const go = async (to) => {
    prev.disabled = next.disabled = true;
    try {
      const pg = await ctx.api.get(`/api/artifacts/${artifactPath(a)}/rows`, { offset: to, limit: PAGE_ROWS });
      if (!ctx.alive()) return;
      offset = to;
      shown = pg.rows.length;
      ui.clear(host).appendChild(pg.rows.length ? rowsTable(pg.rows) : ui.empty("no rows here"));
    } finally {
      showRange();
    }
  };
  prev.addEventListener("click", () => go(Math.max(0, offset - PAGE_ROWS)));
  next.addEventListener("click", () => go(offset + shown));
  showRange();
  out.push(ui.section("Rows", h("div", { class: "toolbar" }, prev, next, where), host));
  return out;
}

async function modelPreview(a, p, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  const m = a.meta || {};
  const out = [];
  const info = {};
  for (const k of ["framework", "framework_version", "model_class", "python_version"]) if (m[k] !== undefined) info[k] = m[k];
  for (const [k, v] of Object.entries(m)) {
    if (!(k in info) && !["metrics", "feature_names", "from_iteration"].includes(k) && (typeof v !== "object" || v === null)) info[k] = v;
  }
  const features = Array.isArray(m.feature_names) ? m.feature_names : [];
  out.push(
    h(
      "div",
      { class: "cards" },
      ui.section("Metadata", ui.kvTable(info, { empty: "no metadata" })),
      ui.section("Metrics", ui.kvTable(m.metrics || a.preview?.metrics || {}, { empty: "no metrics" })),
    ),
  );
  if (features.length) {
    out.push(ui.section(`Features (${features.length})`, h("div", { class: "chips" }, features.map((f) => h("span", { class: "label" }, f)))));
  }
  // Lineage: the run that logged the model (its params and input data) and its registered versions.
  const srcIter = m.from_iteration || a.iteration || 0;
  const [producer, versions] = await Promise.all([
    ctx.api.get(`/api/runs/${enc(a.uid)}`, { iteration: srcIter || undefined }, { quiet: true }).catch(() => null),
    ctx.api.get("/api/model-versions", { run_uid: a.uid, limit: 50 }, { quiet: true }).catch(() => null),
  ]);
  const lineage = [];
  if (producer?.run) {
    const r = producer.run;
    lineage.push(
      h("h3", null, "Trained by"),
      ui.kvTable({
        run: ui.link(`#/runs/${enc(r.uid)}${srcIter ? `?iteration=${srcIter}` : ""}`, `${r.name || r.uid}${srcIter ? ` (iteration ${srcIter})` : ""}`),
        state: ui.stateBadge(r.state),
        started: fmt.time(r.started_at),
        "hub item": p?.lineage?.hub_item || undefined,
        "code hash": p?.lineage?.code_hash ? h("span", { class: "mono", title: p.lineage.code_hash }, String(p.lineage.code_hash).slice(0, 16)) : undefined,
      }),
      h("h3", null, "Input data"),
      ui.kvTable(
        Object.fromEntries(Object.entries(r.inputs || {}).map(([k, v]) => [k, storeHash(v) ? ui.link(storeHash(v), v) : v])),
        { empty: "no inputs" },
      ),
      h("h3", null, "Params"),
      ui.kvTable(r.params, { empty: "no params" }),
    );
  }
  const vs = (versions?.versions || versions?.model_versions || []).filter(Boolean);
  lineage.push(h("h3", null, "Registered versions"));
  lineage.push(
    vs.length
      ? ui.table({
          columns: [
            { key: "name", render: (v) => ui.link(`#/models/${enc(v.name)}`, v.name) },
            { key: "version", num: true },
            { key: "aliases", get: (v) => (v.aliases || []).join(", ") },
            { key: "source", get: (v) => v.source || v.model_uri || "" },
          ],
          rows: vs,
        })
      : ui.empty("not registered"),
  );
  out.push(ui.section("Lineage", h("div", { id: "model-lineage" }, lineage)));
  return out;
}

function filePreview(a, p, ctx) {
  const { h } = ctx.ui;
  if (typeof p?.text === "string") return h("pre", { id: "artifact-text" }, p.text + (p.truncated ? "\n…" : ""));
  if (typeof a.preview === "string" && a.preview) return h("pre", null, a.preview);
  if (a.preview && typeof a.preview === "object") return h("pre", null, JSON.stringify(a.preview, null, 2));
  const url = downloadUrl(a);
  return h("div", { class: "empty" }, "No preview for this kind", url ? [": ", h("a", { href: url, download: a.key }, "download it")] : "", ".");
}
