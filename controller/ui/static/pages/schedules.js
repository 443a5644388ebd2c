// Schedules (#/schedules): each schedule's cron, next firing, last firing and its run, counts;
// #/schedules/<name> shows one with its job and recent runs. Refreshed every 5 s.

import { needsController, poll } from "./ops_common.js";

const REFRESH_MS = 5000;

function target(job) {
  return job?.target || job?.function || job?.handler || "";
}

export async function render(root, params, ctx) {
  const { h, fmt } = ctx.ui;
  const ui = ctx.ui;
  if (needsController(root, ctx, "Schedules")) return;
  const one = params.path[0];
  if (one) root.append(h("div", { class: "crumbs" }, ui.link("#/schedules", "Schedules"), " / ", h("span", { class: "mono" }, one)));
  root.append(h("h1", null, one || "Schedules"));
  const body = h("div", null, ui.loading());
  root.append(body);
  let first = true;

  const runLink = (uid, state) => (uid ? h("span", null, ui.link(`#/runs/${encodeURIComponent(uid)}`, uid.slice(0, 10), { class: "mono" }), state ? [" ", ui.stateBadge(state)] : null) : "—");
  const next = (s) => (s.paused ? h("span", { class: "badge" }, "paused") : s.next_at ? h("span", { title: s.next || "" }, fmt.time(s.next_at), h("span", { class: "muted" }, ` (${fmt.ago(s.next_at)})`)) : "—");

  const drawList = (schedules) => {
    ui.clear(body).append(
      ui.table({
        cls: "schedules",
        columns: [
          { key: "name", label: "Name", render: (s) => ui.link(`#/schedules/${encodeURIComponent(s.name)}`, s.name) },
          { key: "cron", label: "Cron", render: (s) => h("span", { class: "mono" }, `${s.cron}${s.timezone && s.timezone !== "UTC" ? ` ${s.timezone}` : ""}`) },
          { key: "target", label: "Target", get: (s) => target(s.job) },
          { key: "next_at", label: "Next firing", render: next },
          { key: "last_fired_at", label: "Last fired", get: (s) => fmt.time(s.last_fired_at) },
          { key: "last_run_uid", label: "Last run", render: (s) => runLink(s.last_run_uid, s.last_run_state) },
          { key: "runs", label: "Runs", num: true },
          { key: "skipped", label: "Skipped", num: true },
          { key: "active", label: "Active", num: true, get: (s) => (s.active_runs || []).length },
          { key: "concurrency", label: "Concurrency" },
        ],
        rows: schedules,
        empty: "No schedules. Create one with `tickrun schedules create NAME --cron '…' TARGET`.",
      }),
    );
  };

  const drawOne = async (s) => {
    const recent = await ctx.api.get("/api/runs", { label: `tickrun.schedule=${s.name}`, limit: 20 }, { quiet: true }).catch(() => null);
    if (!ctx.alive()) return;
    ui.clear(body).append(
      h(
        "div",
        { class: "summary" },
        h("span", null, "cron ", h("b", { class: "mono" }, s.cron), ` ${s.timezone}`),
        h("span", null, "next ", next(s)),
        h("span", null, "runs ", h("b", null, String(s.runs))),
        h("span", null, "skipped ", h("b", null, String(s.skipped))),
        s.last_skip_reason ? h("span", { class: "muted" }, `last skip: ${s.last_skip_reason}`) : null,
      ),
      ui.section("Job", ui.kvTable({ target: target(s.job), runner: s.job?.runner || "subprocess", concurrency: s.concurrency, missed: s.missed, ...Object.fromEntries(Object.entries(s.job?.params || {}).map(([k, v]) => [`param ${k}`, v])) })),
      ui.section(
        "Recent runs",
        recent
          ? ui.table({
              columns: [
                { key: "uid", label: "Run", render: (r) => runLink(r.uid) },
                { key: "state", label: "State", render: (r) => ui.stateBadge(r.state) },
                { key: "trigger", label: "Trigger", get: (r) => r.labels?.["tickrun.schedule-trigger"] || "" },
                { key: "created_at", label: "Started", get: (r) => fmt.time(r.created_at) },
                { key: "dur", label: "Took", get: (r) => (r.ended_at && r.started_at ? fmt.duration(r.ended_at - r.started_at) : "") },
              ],
              rows: recent.runs || [],
              empty: "No runs yet.",
            })
          : ui.empty("The runs of this schedule are not available."),
      ),
    );
  };

  await poll(
    ctx,
    async () => {
      try {
        if (one) await drawOne(await ctx.api.get(`/api/schedules/${encodeURIComponent(one)}`, null, { quiet: !first }));
        else {
          const a = await ctx.api.get("/api/schedules", null, { quiet: !first });
          if (ctx.alive()) drawList(a.schedules || []);
        }
      } catch (err) {
        if (first && ctx.alive()) ui.clear(body).append(ui.errorBox(err));
      }
      first = false;
    },
    REFRESH_MS,
  );
}
