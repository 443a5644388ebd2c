// Runs table (placeholder until the full page lands).
export async function render(root, params, ctx) {
  const { h } = ctx.ui;
  root.appendChild(h("h1", null, "Runs"));
  const data = await ctx.api.get("/api/runs", { limit: 50 });
  root.appendChild(ctx.ui.table({
    columns: [
      { key: "uid", label: "uid", render: (r) => ctx.ui.link(`#/runs/${r.uid}`, r.uid.slice(0, 8)) },
      { key: "name" }, { key: "project" },
      { key: "state", render: (r) => ctx.ui.stateBadge(r.state) },
      { key: "created_at", label: "start", get: (r) => ctx.ui.fmt.time(r.created_at) },
    ],
    rows: data.runs,
    empty: "No runs yet.",
  }));
}
