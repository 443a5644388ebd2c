// The shell: nav bar, login screen, hash router. A page is a module under pages/ exporting
// `render(root, params, ctx)`; root is an empty <main>, params = {path: [segments after the
// first], query: URLSearchParams}, ctx = {api, ui, navigate(hash), onLeave(fn), session}.

import { api } from "./api.js";
import * as ui from "./ui.js";

const { h, clear } = ui;

// First hash segment → page module; `one` is the module when a second segment follows.
const ROUTES = {
  runs: { list: "runs", one: "run" },
  compare: { list: "compare" },
  artifacts: { list: "artifact", one: "artifact" },
  functions: { list: "functions", one: "function" },
  models: { list: "models", one: "models" },
  monitoring: { list: "monitoring", one: "monitoring" },
  schedules: { list: "schedules", one: "schedules" },
  pipelines: { list: "pipelines", one: "pipelines" },
  hub: { list: "hub", one: "hub" },
};

const NAV = [
  ["runs", "Runs"],
  ["functions", "Functions"],
  ["models", "Models"],
  ["monitoring", "Monitoring"],
  ["schedules", "Schedules"],
  ["pipelines", "Pipelines"],
  ["hub", "Hub"],
];

let leaveFns = [];
let generation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [pathPart, queryPart = ""] = raw.split("?", 2);
  const segs = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  return { segs, query: new URLSearchParams(queryPart) };
}

export function navigate(hash) {
  const target = hash.startsWith("#") ? hash : `#${hash.startsWith("/") ? "" : "/"}${hash}`;
  if (location.hash === target) route();
  else location.hash = target;
}

function leave() {
  const fns = leaveFns;
  leaveFns = [];
  for (const fn of fns) {
    try {
      fn();
    } catch (err) {
      console.warn("page cleanup failed", err);
    }
  }
}

function drawNav(active) {
  const nav = document.getElementById("nav");
  clear(nav);
  for (const [seg, label] of NAV) {
    const on = seg === active || (seg === "runs" && active === "compare");
    nav.appendChild(h("a", { href: `#/${seg}`, class: on ? "active" : "" }, label));
  }
  const who = document.getElementById("who");
  clear(who);
  if (api.session) {
    who.appendChild(h("span", { class: "mode" }, api.session.mode === "local" ? "local store" : "controller"));
    if (api.session.mode === "controller") {
      who.appendChild(h("button", { class: "link", onclick: logout, id: "logout" }, "Log out"));
    }
  }
}

async function logout() {
  try {
    await api.post("/ui/logout", {});
  } finally {
    api.session = null;
    showLogin();
  }
}

function view() {
  return document.getElementById("view");
}

async function route() {
  const gen = ++generation;
  leave();
  ui.clearBanners();
  const { segs, query } = parseHash();
  if (!segs.length) {
    location.replace("#/runs");
    return;
  }
  const [first, ...rest] = segs;
  const entry = ROUTES[first];
  const name = entry ? (rest.length && entry.one ? entry.one : entry.list) : null;
  // The page's module loads while the session is asked for (one round trip less to first paint).
  const modP = name ? import(`./pages/${name}.js`) : null;
  modP?.catch(() => {}); // reported below, once the session is known
  if (!api.session) {
    await loadSession();
    if (gen !== generation) return;
    if (!api.session) return; // the login screen is showing
  }
  drawNav(first);
  const root = h("main", { class: `page page-${first}` });
  clear(view()).appendChild(root);
  if (!entry) {
    root.append(h("h1", null, "Not found"), ui.empty(`No page at #/${segs.join("/")}.`));
    return;
  }
  root.appendChild(ui.loading());
  let mod;
  try {
    mod = await modP;
  } catch (err) {
    if (gen !== generation) return;
    clear(root).append(h("h1", null, first), ui.errorBox(`This page could not be loaded: ${err.message}`));
    return;
  }
  if (gen !== generation) return;
  clear(root);
  const ctx = {
    api,
    ui,
    session: api.session,
    navigate,
    onLeave(fn) {
      if (gen === generation) leaveFns.push(fn);
      else fn(); // the user already moved on
    },
    // True while this page is still the one shown (async work checks before drawing).
    alive: () => gen === generation,
  };
  try {
    await mod.render(root, { path: rest, query }, ctx);
    // After the next paint: what bench/ui reads as the page's first paint with its data.
    if (gen === generation) requestAnimationFrame(() => setTimeout(() => performance.mark(`tickrun:painted:${name}`), 0));
  } catch (err) {
    if (gen !== generation || err?.status === 401) return;
    console.warn("page render failed", err);
    if (!root.querySelector("h1")) root.prepend(h("h1", null, first));
    root.appendChild(ui.errorBox(err));
  }
}

async function loadSession() {
  try {
    const resp = await fetch("/ui/session", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (resp.ok) {
      api.session = await resp.json();
      return;
    }
    if (resp.status === 401) {
      showLogin();
      return;
    }
    ui.banner(`GET /ui/session → ${resp.status}`);
  } catch (err) {
    ui.banner(`cannot reach the server: ${err.message}`);
  }
}

function showLogin(reason) {
  generation++;
  leave();
  api.session = null;
  drawNav(null);
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "current-password", required: true, autofocus: true });
  const msg = h("div", { class: "login-msg" }, reason || "");
  const form = h(
    "form",
    { class: "login", id: "login" },
    h("h1", null, "Log in"),
    h("p", { class: "muted" }, "Paste the controller token (TICKRUN_TOKEN). The session lasts 12 hours."),
    h("label", { for: "token" }, "Token"),
    input,
    h("button", { type: "submit", class: "primary" }, "Log in"),
    msg,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    msg.textContent = "";
    const resp = await fetch("/ui/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token: input.value }),
    }).catch((err) => ({ ok: false, status: 0, statusText: err.message }));
    if (!resp.ok) {
      msg.textContent = resp.status === 401 ? "Wrong token." : `Login failed (${resp.status} ${resp.statusText}).`;
      return;
    }
    api.session = await resp.json();
    route();
  });
  clear(view()).appendChild(h("main", { class: "page page-login" }, form));
  input.focus();
}

api.setUnauthorizedHandler(() => showLogin("Your session has ended; log in again."));
window.addEventListener("hashchange", route);
route();
