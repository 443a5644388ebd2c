// The hub: #/hub is the catalogue (items, kinds, latest versions, categories); #/hub/<name>
// [?version=V] shows an item's versions, its description and docs, and each handler's parameters,
// read from the version's item.yaml.

export async function render(root, params, ctx) {
  return params.path.length ? renderItem(root, params.path[0], params.query.get("version"), ctx) : renderList(root, params, ctx);
}

async function index(ctx) {
  return ctx.api.get("/api/hub");
}

function list(v) {
  if (Array.isArray(v)) return v;
  if (v == null || v === "") return [];
  return String(v).replace(/^\[|\]$/g, "").split(",").map((s) => s.trim()).filter(Boolean);
}

async function renderList(root, params, ctx) {
  const { h } = ctx.ui;
  const ui = ctx.ui;
  root.append(h("h1", null, "Hub"), ui.loading());
  const idx = await index(ctx);
  if (!ctx.alive()) return;
  root.querySelector(".loading")?.remove();
  const items = Object.entries(idx.items || {}).map(([name, e]) => ({ name, latest: e.latest, versions: Object.keys(e.versions || {}), meta: e.versions?.[e.latest] || {} }));
  const filter = h("input", { type: "search", placeholder: "filter by name, category or text", id: "hub-filter", style: { minWidth: "24em" } });
  const body = h("div");
  const draw = () => {
    const f = filter.value.trim().toLowerCase();
    const rows = items.filter((it) => !f || `${it.name} ${it.meta.description || ""} ${list(it.meta.categories).join(" ")}`.toLowerCase().includes(f));
    ui.clear(body).append(
      ui.table({
        cls: "hub-items",
        columns: [
          { key: "name", label: "Item", render: (it) => ui.link(`#/hub/${encodeURIComponent(it.name)}`, it.name) },
          { key: "kind", label: "Kind", get: (it) => it.meta.kind },
          { key: "latest", label: "Latest" },
          { key: "versions", label: "Versions", get: (it) => it.versions.join(", ") },
          { key: "categories", label: "Categories", render: (it) => h("span", { class: "chips" }, list(it.meta.categories).map((c) => h("span", { class: "chip" }, c))) },
          { key: "description", label: "Description", get: (it) => it.meta.description },
        ],
        rows,
        empty: items.length ? "No item matches." : "The catalogue is empty.",
      }),
    );
  };
  filter.addEventListener("input", ui.debounce(draw, 150));
  root.append(h("div", { class: "toolbar" }, filter, h("span", { class: "muted" }, `${items.length} items`)), body);
  draw();
}

async function renderItem(root, name, wanted, ctx) {
  const { h } = ctx.ui;
  const ui = ctx.ui;
  root.append(h("div", { class: "crumbs" }, ui.link("#/hub", "Hub"), " / ", h("span", { class: "mono" }, name)));
  const title = h("h1", null, name);
  root.append(title, ui.loading());
  const idx = await index(ctx);
  if (!ctx.alive()) return;
  root.querySelector(".loading")?.remove();
  const entry = idx.items?.[name];
  if (!entry) {
    root.append(ui.empty(`No hub item ${name}.`));
    return;
  }
  const version = wanted && entry.versions[wanted] ? wanted : entry.latest;
  const meta = entry.versions[version];
  title.append(" ", h("span", { class: "muted" }, version));
  root.append(
    h(
      "div",
      { class: "summary" },
      h("span", null, "kind ", h("b", null, meta.kind || "")),
      h("span", null, "latest ", h("b", null, entry.latest)),
      h("span", null, "uri ", h("b", { class: "mono" }, `hub://${name}:${version}`)),
      h(
        "span",
        { class: "versions" },
        "versions ",
        Object.keys(entry.versions).map((v) => [v === version ? h("b", null, v) : ui.link(`#/hub/${encodeURIComponent(name)}?version=${encodeURIComponent(v)}`, v), " "]),
      ),
    ),
    h("p", { class: "description" }, meta.description || ""),
  );
  const body = h("div", null, ui.loading("Reading item.yaml…"));
  root.append(body);
  let item;
  let text;
  try {
    // item.yaml parsed on the server (GET /api/hub/items/{name}/{version}) and as written.
    const got = await ctx.api.get(`/api/hub/items/${encodeURIComponent(name)}/${encodeURIComponent(version)}`, null, { quiet: true });
    item = got.item && typeof got.item === "object" ? got.item : {};
    text = got.yaml || "";
  } catch (err) {
    ui.clear(body).append(ui.errorBox(`item.yaml could not be read: ${err.message}`));
    return;
  }
  if (!ctx.alive()) return;
  ui.clear(body);
  body.append(
    ui.section(
      "About",
      ui.kvTable({
        requirements: list(item.requirements ?? meta.requirements).join(", ") || "none",
        files: Object.keys(meta.files || {}).join(", "),
        categories: list(item.categories ?? meta.categories).join(", "),
        "default handler": item.default_handler || "",
        maintainers: list(item.maintainers).join(", "),
      }),
    ),
  );
  for (const [handler, hd] of Object.entries(item.handlers || {})) {
    body.append(
      ui.section(
        `Handler ${handler}`,
        hd.doc ? h("p", null, hd.doc) : null,
        h("p", { class: "muted mono" }, `tickrun run hub://${name}:${version}#${handler} -p key=value …`),
        ui.table({
          cls: "hub-params",
          columns: [
            { key: "name", label: "Parameter", render: (p) => h("b", { class: "mono" }, p.name) },
            { key: "type", label: "Type", get: (p) => `${p.type || ""}${p.input ? " (input)" : ""}` },
            { key: "default", label: "Default", render: (p) => h("span", { class: "mono" }, "default" in p ? ui.fmt.value(p.default) : "") },
            { key: "doc", label: "Description", get: (p) => p.doc || "" },
          ],
          rows: hd.parameters || [],
          empty: "No parameters.",
        }),
      ),
    );
  }
  if (item.doc) body.append(ui.section("Docs", h("pre", { class: "doc", style: { whiteSpace: "pre-wrap" } }, item.doc)));
  body.append(ui.section("item.yaml", h("details", null, h("summary", null, "show the file"), h("pre", { class: "mono" }, text))));
}
