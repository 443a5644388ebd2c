// The model registry: #/models lists registered models; #/models/<name> shows a model's
// versions with their aliases and lineage (the run, its datasets, the model artifact, the hub
// item), and sets an alias (after a confirmation).

import { storeHash } from "./artifact.js";
import { formDialog } from "./ops_common.js";

export async function render(root, params, ctx) {
  return params.path.length ? renderModel(root, params.path[0], ctx) : renderList(root, ctx);
}

async function renderList(root, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  root.append(h("h1", null, "Models"), ui.loading());
  const a = await ctx.api.get("/api/models", { limit: 1000 });
  if (!ctx.alive()) return;
  root.querySelector(".loading")?.remove();
  const models = a.models || [];
  root.append(
    ui.table({
      cls: "models",
      columns: [
        { key: "name", label: "Name", render: (m) => ui.link(`#/models/${encodeURIComponent(m.name)}`, m.name) },
        { key: "versions", label: "Versions", num: true },
        { key: "latest_version", label: "Latest", num: true },
        {
          key: "aliases",
          label: "Aliases",
          render: (m) =>
            h(
              "span",
              { class: "chips" },
              Object.entries(m.aliases || {}).map(([k, v]) => h("span", { class: "chip alias" }, `@${k} → v${v}`)),
            ),
        },
        { key: "updated_at", label: "Updated", get: (m) => fmt.time(m.updated_at) },
      ],
      rows: models,
      empty: "No registered models. Register one with `tickrun models register <store://…> --name NAME`.",
    }),
  );
}

function lineageBlock(ui, v) {
  const { h } = ui;
  const l = v.lineage || {};
  const runHash = l.run_uid ? `#/runs/${encodeURIComponent(l.run_uid)}${l.run_iteration ? `?iteration=${l.run_iteration}` : ""}` : null;
  const art = storeHash(v.model_uri);
  return h(
    "div",
    { class: "lineage" },
    h(
      "div",
      null,
      "run ",
      runHash ? ui.link(runHash, l.run_name ? `${l.run_name} (${l.run_uid.slice(0, 8)})` : l.run_uid, { class: "run-link" }) : "—",
      l.run_state ? [" ", ui.stateBadge(l.run_state)] : null,
    ),
    h("div", null, "model ", art ? ui.link(art, v.model_uri, { class: "artifact-link mono" }) : h("span", { class: "mono" }, v.model_uri)),
    (l.datasets || []).length
      ? h(
          "div",
          null,
          "datasets ",
          l.datasets.map((d) => {
            const hsh = storeHash(d.uri);
            return h("span", { class: "chip" }, `${d.name}: `, hsh ? ui.link(hsh, d.uri, { class: "mono" }) : h("span", { class: "mono" }, d.uri));
          }),
        )
      : null,
    l.hub_item ? h("div", null, "hub ", ui.link(`#/hub/${encodeURIComponent(l.hub_item)}`, `${l.hub_item}${l.hub_version ? ` ${l.hub_version}` : ""}`), l.hub_handler ? ` #${l.hub_handler}` : "") : null,
    l.code_hash ? h("div", { class: "muted" }, "code ", h("span", { class: "mono" }, String(l.code_hash).slice(0, 16))) : null,
  );
}

async function renderModel(root, name, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  root.append(h("div", { class: "crumbs" }, ui.link("#/models", "Models"), " / ", h("span", { class: "mono" }, name)));
  const title = h("h1", null, name);
  root.append(title);
  const body = h("div", null, ui.loading());
  root.append(body);

  const load = async () => {
    const [m, vs] = await Promise.all([
      ctx.api.get(`/api/models/${encodeURIComponent(name)}`),
      ctx.api.get("/api/model-versions", { name, limit: 1000 }),
    ]);
    if (!ctx.alive()) return;
    const model = m.model;
    const versions = vs.versions || [];
    ui.clear(body);
    body.append(
      h(
        "div",
        { class: "summary" },
        h("span", null, "versions ", h("b", null, String(model.versions))),
        h("span", null, "latest ", h("b", null, `v${model.latest_version}`)),
        h("span", null, "updated ", h("b", null, fmt.time(model.updated_at))),
      ),
    );
    const aliasChips = h(
      "div",
      { class: "chips aliases" },
      Object.entries(model.aliases || {}).length
        ? Object.entries(model.aliases).map(([k, v]) => h("span", { class: "chip alias", dataset: { alias: k } }, `@${k} → v${v}`))
        : h("span", { class: "muted" }, "no aliases"),
    );
    const setAlias = async (preset) => {
      const values = await formDialog(
        ui,
        `Set an alias of ${name}`,
        [
          { name: "alias", label: "Alias", value: preset?.alias || "" },
          { name: "version", label: "Version", type: "number", value: preset?.version || model.latest_version, min: 1 },
        ],
        { ok: "Next" },
      );
      if (!values) return;
      const alias = values.alias.trim();
      const version = Number(values.version);
      if (!/^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(alias) || alias.toLowerCase() === "latest") {
        ui.banner(`Bad alias ${JSON.stringify(alias)}: 1–64 of A–Z a–z 0–9 _ - starting with a letter, not "latest".`);
        return;
      }
      const now = model.aliases?.[alias];
      const msg = now ? `Move @${alias} of ${name} from v${now} to v${version}? Deployments serving models:/${name}@${alias} switch to it.` : `Point the new alias @${alias} of ${name} at v${version}?`;
      if (!(await ui.confirm(msg, { ok: "Set alias" }))) return;
      try {
        await ctx.api.put(`/api/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, { version });
      } catch {
        return; // the banner says why
      }
      ui.banner(`@${alias} → v${version}`, "info");
      await load();
    };
    body.append(ui.section("Aliases", aliasChips, h("div", { class: "toolbar" }, h("button", { id: "set-alias", class: "primary", onclick: () => setAlias() }, "Set alias…"))));
    body.append(
      ui.section(
        "Versions",
        ui.table({
          cls: "versions",
          columns: [
            { key: "version", label: "Version", num: true, render: (v) => h("b", null, `v${v.version}`) },
            { key: "aliases", label: "Aliases", render: (v) => h("span", { class: "chips" }, (v.aliases || []).map((a) => h("span", { class: "chip alias" }, `@${a}`))) },
            { key: "framework", label: "Framework" },
            { key: "metrics", label: "Metrics", render: (v) => h("span", { class: "mono" }, Object.entries(v.metrics || {}).slice(0, 4).map(([k, x]) => `${k}=${fmt.value(x)}`).join("  ")) },
            { key: "lineage", label: "Lineage", render: (v) => lineageBlock(ui, v) },
            { key: "created_at", label: "Registered", get: (v) => fmt.time(v.created_at) },
            { key: "act", label: "", sortKey: null, render: (v) => h("button", { class: "link", onclick: () => setAlias({ version: v.version }) }, "alias…") },
          ],
          rows: versions,
          empty: "No versions.",
        }),
      ),
    );
    const params = versions[0]?.lineage?.params;
    if (params && Object.keys(params).length) body.append(ui.section(`Params of v${versions[0].version}'s run`, ui.kvTable(params)));
  };
  await load();
}
