// Shared helpers for the pages (ctx.ui). Plain DOM, no framework.
//
// DOM       h(tag, attrs, ...children), clear(el), link(hash, text), section(title, ...children)
// format    fmt.num(v), fmt.int(v), fmt.value(v), fmt.time(unix_s), fmt.ago(unix_s),
//           fmt.duration(seconds), fmt.bytes(n), isNum(v)
// states    loading(text), empty(text), errorBox(err), banner(msg, kind), clearBanners(),
//           stateBadge(state)
// tables    table({columns, rows, sort, onSort, rowKey, selected, onSelect, rowClass, empty}),
//           kvTable(obj), pager({offset, limit, total, capped, onChange}),
//           columnChooser({columns, visible, onChange, label})
// misc      confirm(message, {ok, danger}) -> Promise<bool>, prefs.get/set (localStorage),
//           debounce(fn, ms)
// charts    loadECharts() -> Promise<echarts>, chart(el, option, ctx) -> ECharts instance
//           (resizes with the page, disposed when the page is left)
//
// Column: {key, label, get(row) -> value, num: bool (right-aligned, monospace), render(row) ->
// Node|string (default: formatted get()), sortKey (what onSort receives; default key; null: not
// sortable), title}.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2).toLowerCase(), v);
      } else if (k in el && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function link(hash, text, attrs = {}) {
  return h("a", { href: hash.startsWith("#") ? hash : `#${hash}`, ...attrs }, text);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

// ---- formatting

export function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export const fmt = {
  // Numbers: integers with separators; others with 6 significant digits, exponent when tiny/huge.
  num(v) {
    if (v === null || v === undefined || v === "") return "";
    if (typeof v !== "number") return String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return intFmt.format(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-4 || a >= 1e9)) return v.toExponential(4);
    return String(Number(v.toPrecision(6)));
  },
  int(v) {
    return isNum(v) ? intFmt.format(Math.round(v)) : v == null ? "" : String(v);
  },
  value(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") return fmt.num(v);
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  },
  time(ts) {
    if (!isNum(ts)) return "";
    const d = new Date(ts * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return (
      `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
    );
  },
  ago(ts) {
    if (!isNum(ts)) return "";
    const s = Date.now() / 1000 - ts;
    if (s < 0) return "in " + fmt.duration(-s);
    return fmt.duration(s) + " ago";
  },
  duration(s) {
    if (!isNum(s)) return "";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.round((s % 86400) / 3600)}h`;
  },
  bytes(n) {
    if (!isNum(n)) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  },
};

// ---- states

export function loading(text = "Loading…") {
  return h("div", { class: "loading" }, text);
}

export function empty(text = "Nothing here yet.") {
  return h("div", { class: "empty" }, text);
}

export function errorBox(err) {
  return h("div", { class: "error-box" }, err?.message || String(err));
}

export function banner(msg, kind = "error") {
  const host = document.getElementById("banners");
  if (!host) return null;
  // The same message twice (a poll failing every few seconds) stays one banner.
  for (const b of host.children) if (b.dataset.msg === msg) return b;
  const el = h(
    "div",
    { class: `banner ${kind}`, dataset: { msg } },
    h("span", null, msg),
    h("button", { class: "close", title: "dismiss", onclick: () => el.remove() }, "×"),
  );
  host.appendChild(el);
  if (kind !== "error") setTimeout(() => el.remove(), 5000);
  return el;
}

export function clearBanners() {
  const host = document.getElementById("banners");
  if (host) clear(host);
}

export function stateBadge(state) {
  const s = String(state || "unknown").toLowerCase();
  return h("span", { class: `badge state-${s}` }, s);
}

// ---- tables

export function table({
  columns,
  rows,
  sort = null,
  onSort = null,
  rowKey = null,
  selected = null,
  onSelect = null,
  rowClass = null,
  empty: emptyText = "No rows.",
  cls = "",
}) {
  const selectable = !!(selected && rowKey);
  const head = h("tr");
  if (selectable) {
    const all = h("input", { type: "checkbox", title: "select all on this page" });
    all.checked = rows.length > 0 && rows.every((r) => selected.has(rowKey(r)));
    all.addEventListener("change", () => {
      for (const r of rows) {
        if (all.checked) selected.add(rowKey(r));
        else selected.delete(rowKey(r));
      }
      body.querySelectorAll("input.sel").forEach((cb) => {
        cb.checked = all.checked;
        cb.closest("tr").classList.toggle("selected", all.checked);
      });
      onSelect?.(selected);
    });
    head.appendChild(h("th", { class: "sel" }, all));
  }
  for (const c of columns) {
    const sk = c.sortKey === undefined ? c.key : c.sortKey;
    const th = h("th", { class: c.num ? "num" : "", title: c.title || c.label || c.key, dataset: { key: c.key } }, c.label ?? c.key);
    if (onSort && sk) {
      th.classList.add("sortable");
      if (sort && sort.key === sk) {
        th.classList.add(sort.order === "asc" ? "asc" : "desc");
      }
      th.addEventListener("click", () => {
        const order = sort && sort.key === sk && sort.order === "desc" ? "asc" : "desc";
        onSort(sk, order);
      });
    }
    head.appendChild(th);
  }
  const body = h("tbody");
  for (const r of rows) {
    const tr = h("tr", { class: rowClass ? rowClass(r) || "" : "" });
    if (selectable) {
      const k = rowKey(r);
      const cb = h("input", { type: "checkbox", class: "sel", dataset: { key: k } });
      cb.checked = selected.has(k);
      cb.addEventListener("change", () => {
        if (cb.checked) selected.add(k);
        else selected.delete(k);
        tr.classList.toggle("selected", cb.checked);
        onSelect?.(selected);
      });
      tr.appendChild(h("td", { class: "sel" }, cb));
    }
    for (const c of columns) {
      let content;
      if (c.render) content = c.render(r);
      else {
        const v = c.get ? c.get(r) : r[c.key];
        content = c.num ? fmt.num(v) : fmt.value(v);
      }
      tr.appendChild(h("td", { class: c.num ? "num" : "" }, content));
    }
    body.appendChild(tr);
  }
  const tbl = h("table", { class: `grid ${cls}` }, h("thead", null, head), body);
  if (!rows.length) {
    return h("div", { class: "table-wrap" }, tbl, empty(emptyText));
  }
  return h("div", { class: "table-wrap" }, tbl);
}

export function kvTable(obj, { empty: emptyText = "none" } = {}) {
  const entries = Object.entries(obj || {}).filter(([, v]) => v !== undefined);
  if (!entries.length) return empty(emptyText);
  return h(
    "table",
    { class: "kv" },
    h(
      "tbody",
      null,
      entries.map(([k, v]) =>
        h("tr", null, h("th", null, k), h("td", { class: isNum(v) ? "num" : "" }, v instanceof Node ? v : fmt.value(v))),
      ),
    ),
  );
}

export function pager({ offset, limit, total = null, capped = false, count = null, onChange }) {
  const shown = count ?? limit;
  const last = offset + shown;
  const totalText = total == null ? "" : ` of ${fmt.int(total)}${capped ? "+" : ""}`;
  const info = h("span", { class: "pager-info" }, shown ? `${fmt.int(offset + 1)}–${fmt.int(last)}${totalText}` : `0${totalText}`);
  const hasNext = total == null ? shown >= limit : last < total;
  const btn = (text, to, enabled, title) =>
    h("button", { class: "pager-btn", disabled: !enabled, title, onclick: () => onChange(Math.max(0, to)) }, text);
  const size = h(
    "select",
    { class: "pager-size", title: "rows per page", onchange: (e) => onChange(0, Number(e.target.value)) },
    [25, 50, 100, 200, 500].map((n) => h("option", { value: n, selected: n === limit }, `${n} / page`)),
  );
  return h(
    "div",
    { class: "pager" },
    btn("«", 0, offset > 0, "first page"),
    btn("‹", offset - limit, offset > 0, "previous page"),
    info,
    btn("›", offset + limit, hasNext, "next page"),
    size,
  );
}

// A button opening a checklist of columns; onChange(newVisibleArray) on each toggle.
export function columnChooser({ columns, visible, onChange, label = "Columns" }) {
  const vis = new Set(visible);
  const panel = h("div", { class: "chooser-panel", hidden: true });
  const filter = h("input", { type: "search", placeholder: "filter columns", class: "chooser-filter" });
  const list = h("div", { class: "chooser-list" });
  const draw = () => {
    clear(list);
    const f = filter.value.toLowerCase();
    let group = null;
    for (const c of columns) {
      if (f && !c.key.toLowerCase().includes(f)) continue;
      if (c.group && c.group !== group) {
        group = c.group;
        list.appendChild(h("div", { class: "chooser-group" }, group));
      }
      const cb = h("input", { type: "checkbox", checked: vis.has(c.key) });
      cb.addEventListener("change", () => {
        if (cb.checked) vis.add(c.key);
        else vis.delete(c.key);
        onChange(columns.map((x) => x.key).filter((k) => vis.has(k)));
      });
      list.appendChild(h("label", { class: "chooser-item" }, cb, " ", c.label ?? c.key));
    }
  };
  filter.addEventListener("input", draw);
  panel.append(filter, list);
  draw();
  const btn = h("button", { class: "chooser-btn", type: "button" }, `${label} ▾`);
  const wrap = h("div", { class: "chooser" }, btn, panel);
  btn.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
  });
  const outside = (e) => {
    // The chooser was redrawn or the page left: drop this listener.
    if (!wrap.isConnected) document.removeEventListener("click", outside, true);
    else if (!wrap.contains(e.target)) panel.hidden = true;
  };
  document.addEventListener("click", outside, true);
  return wrap;
}

// ---- dialogs, prefs, timing

export function confirm(message, { ok = "OK", cancel = "Cancel", danger = false } = {}) {
  return new Promise((resolve) => {
    const done = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    const dlg = h(
      "dialog",
      { class: "confirm" },
      h("p", null, message),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => done(false) }, cancel),
        h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => done(true) }, ok),
      ),
    );
    dlg.addEventListener("cancel", (e) => {
      e.preventDefault();
      done(false);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}

export const prefs = {
  get(key, fallback = null) {
    try {
      const raw = localStorage.getItem(`tickrun.${key}`);
      return raw == null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`tickrun.${key}`, JSON.stringify(value));
    } catch {
      // storage full or disabled: the preference lasts this page only
    }
  },
};

export function debounce(fn, ms = 250) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

// ---- charts (Apache ECharts, vendored; loaded on the first chart, not on first paint)

let echartsPromise = null;
export function loadECharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  if (!echartsPromise) {
    echartsPromise = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = "/ui/static/vendor/echarts/echarts.min.js";
      s.onload = () => resolve(window.echarts);
      s.onerror = () => {
        echartsPromise = null;
        reject(new Error("could not load the chart library"));
      };
      document.head.appendChild(s);
    });
  }
  return echartsPromise;
}

export const chartTheme = {
  color: ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"],
  textStyle: { fontFamily: "ui-sans-serif, system-ui, sans-serif", fontSize: 12 },
};

export async function chart(el, option, ctx) {
  const echarts = await loadECharts();
  const inst = echarts.init(el, null, { renderer: "canvas" });
  inst.setOption({ ...chartTheme, animation: false, ...option });
  // A ResizeObserver also fires once when observing starts: a resize at the size the chart was
  // just drawn at would draw it all again (~100 ms for a 200-line parallel chart).
  let size = `${el.clientWidth}x${el.clientHeight}`;
  const ro = new ResizeObserver(() => {
    const now = `${el.clientWidth}x${el.clientHeight}`;
    if (now === size) return;
    size = now;
    inst.resize();
  });
  ro.observe(el);
  ctx?.onLeave?.(() => {
    ro.disconnect();
    inst.dispose();
  });
  return inst;
}
