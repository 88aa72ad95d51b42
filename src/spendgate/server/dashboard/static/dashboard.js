/* spendgate dashboard: fetches /dashboard/api/summary for the chosen range and filters and
   draws it with Chart.js (vendored in this folder). Filters live in the URL, so a view can be
   bookmarked or shared. Clicking a bar in a "Top …" chart filters on that value. */
"use strict";

const DIMS = ["feature", "team", "tenant", "user", "model"];
const TIER_ORDER = ["frontier", "mid", "small", "unknown"];
const TIER_COLORS = { frontier: "#d9480f", mid: "#1c7ed6", small: "#2f9e44", unknown: "#868e96" };
const PALETTE = ["#1c7ed6", "#d9480f", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#e64980",
                 "#5c940d", "#364fc7", "#868e96"];
const charts = {};
let loads = 0;
let last = null;

function num(s) { const v = typeof s === "string" ? parseFloat(s) : s; return (v == null || isNaN(v)) ? null : v; }

function usd(s) {
  const v = num(s);
  if (v === null) return "—";
  if (v === 0) return "$0";
  const a = Math.abs(v);
  if (a >= 1000) return "$" + v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (a >= 1) return "$" + v.toFixed(2);
  return "$" + v.toFixed(Math.min(9, 2 - Math.floor(Math.log10(a))));
}

function pct(x) { return x == null ? "—" : (100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0) + "%"; }
function int(n) { return n == null ? "—" : Number(n).toLocaleString("en-US"); }
function short(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function state() {
  const p = new URLSearchParams(location.search);
  const s = { since: p.get("since") || "7d" };
  for (const d of DIMS) if (p.get(d)) s[d] = p.get(d);
  return s;
}

function setState(s) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(s)) if (v) p.set(k, v);
  history.replaceState(null, "", location.pathname + "?" + p.toString());
  load();
}

function fillSelect(dim, options, chosen) {
  const sel = document.getElementById("f-" + dim);
  const values = [...options];
  if (chosen && !values.includes(chosen)) values.unshift(chosen);
  sel.replaceChildren(el("option", { value: "", text: "all" }),
    ...values.map(v => el("option", { value: v, text: short(v, 28) })));
  sel.value = chosen || "";
}

function chart(id, config) {
  if (charts[id]) {
    charts[id].data = config.data;
    charts[id].options = config.options;
    charts[id].update();
  } else {
    charts[id] = new Chart(document.getElementById(id), config);
  }
  return charts[id];
}

const moneyAxis = { beginAtZero: true, ticks: { callback: v => usd(v) }, grid: { color: "#eef0f2" } };

function drawTime(data) {
  const by = document.getElementById("series-by").value;
  const labels = data.series.labels.map(l => data.range.unit === "hour" ? l.slice(5, 10) + " " + l.slice(11, 16) : l.slice(5));
  let datasets;
  if (by === "tier") {
    const sums = {};
    for (const [model, values] of Object.entries(data.series.models)) {
      const tier = data.series.tiers[model] || "unknown";
      const acc = sums[tier] || (sums[tier] = new Array(labels.length).fill(0));
      values.forEach((v, i) => { acc[i] += num(v); });
    }
    datasets = TIER_ORDER.filter(t => sums[t]).map(t => ({ label: t, data: sums[t], backgroundColor: TIER_COLORS[t] }));
  } else {
    datasets = Object.entries(data.series.models).map(([model, values], i) => ({
      label: model, data: values.map(num), backgroundColor: PALETTE[i % PALETTE.length] }));
  }
  chart("chart-time", {
    type: "bar",
    data: { labels, datasets },
    options: {
      maintainAspectRatio: false, animation: false,
      scales: { x: { stacked: true, grid: { display: false } }, y: { ...moneyAxis, stacked: true } },
      plugins: { legend: { position: "bottom" },
                 tooltip: { callbacks: { label: c => `${c.dataset.label}: ${usd(c.parsed.y)}` } } },
    },
  });
}

function drawTop(dim, rows) {
  chart("chart-" + dim, {
    type: "bar",
    data: {
      labels: rows.map(r => short(r.name, 22)),
      datasets: [{ label: "spend", data: rows.map(r => num(r.cost_usd)), backgroundColor: "#1c7ed6",
                   names: rows.map(r => r.name), rows }],
    },
    options: {
      indexAxis: "y", maintainAspectRatio: false, animation: false,
      scales: { x: moneyAxis, y: { grid: { display: false }, ticks: { autoSkip: false } } },
      plugins: { legend: { display: false },
                 tooltip: { callbacks: { label: c => {
                   const r = rows[c.dataIndex];
                   return `${usd(r.cost_usd)} · ${int(r.calls)} requests · ${usd(r.cost_per_call_usd)}/request`;
                 } } } },
      onClick: (_evt, items) => {
        if (!items.length) return;
        const name = rows[items[0].index].name;
        if (name === "(none)") return;
        setState({ ...state(), [dim]: name });
      },
      onHover: (evt, items) => { evt.native.target.style.cursor = items.length ? "pointer" : "default"; },
    },
  });
}

function drawSavings(data) {
  const rows = data.savings;
  chart("chart-savings", {
    type: "bar",
    data: { labels: rows.map(r => r.label),
            datasets: [{ label: "saved", data: rows.map(r => num(r.savings_usd)), backgroundColor: "#2f9e44" }] },
    options: {
      maintainAspectRatio: false, animation: false,
      scales: { y: moneyAxis, x: { grid: { display: false } } },
      plugins: { legend: { display: false }, tooltip: { callbacks: { label: c => usd(c.parsed.y) } } },
    },
  });
  const saved = num(data.totals.savings_usd);
  const baseline = num(data.totals.baseline_usd);
  document.getElementById("savings-note").textContent = saved
    ? `${usd(saved)} saved: ${pct(saved / baseline)} of the ${usd(baseline)} these calls would have cost unoptimized.`
    : "Nothing saved yet: caching, routing, trimming and prompt caching credit their savings here once turned on.";
}

function kpi(id, value, title) {
  const k = document.getElementById(id);
  k.querySelector("b").textContent = value;
  if (title) k.title = title;
}

function drawKpis(t) {
  kpi("k-cost", usd(t.cost_usd), t.unknown_cost_calls ? `${t.unknown_cost_calls} calls have no known price` : "");
  kpi("k-calls", int(t.calls));
  kpi("k-per-call", usd(t.cost_per_call_usd));
  kpi("k-users", int(t.active_users));
  const monthly = t.cost_per_active_user_month_usd != null;
  kpi("k-per-user", usd(monthly ? t.cost_per_active_user_month_usd : t.cost_per_active_user_usd),
      `in the range: ${usd(t.cost_per_active_user_usd)} per active user`);
  document.querySelector("#k-per-user span").textContent = monthly ? "Cost / active user / month" : "Cost / active user";
  kpi("k-saved", usd(t.savings_usd));
  kpi("k-cache", pct(t.cache_hit_rate), `${int(t.cache_lookups)} cache lookups`);
  kpi("k-routed", pct(t.routing_share), `${int(t.routed_calls)} calls served by a different model than asked`);
  kpi("k-errors", t.calls ? pct(t.errors / t.calls) : "—", `${int(t.errors)} calls answered with status ≥ 400`);
}

function drawModels(rows) {
  const body = document.querySelector("#t-models tbody");
  body.replaceChildren(...rows.map(r => el("tr", {},
    el("td", { text: r.name }),
    el("td", {}, el("span", { class: "tier " + r.tier, text: r.tier })),
    el("td", { class: "n", text: int(r.calls) }),
    el("td", { class: "n", text: usd(r.cost_usd) }),
    el("td", { class: "n", text: usd(r.cost_per_call_usd) }))));
}

function drawFeatureSavings(rows) {
  const box = document.getElementById("feature-savings");
  if (!rows || !rows.length) { box.replaceChildren(el("p", { class: "empty", text: "no spend in this range" })); return; }
  const anySaved = rows.some(r => num(r.savings_usd) > 0);
  const table = el("table", { id: "t-feature-savings" },
    el("thead", {}, el("tr", {}, el("th", { text: "feature" }), el("th", { class: "n", text: "spend" }),
      el("th", { class: "n", text: "unoptimized" }), el("th", { class: "n", text: "saved" }), el("th", { text: "" }))),
    el("tbody", {}, ...rows.map(r => {
      const fill = el("i");
      fill.style.width = Math.min(100, 100 * (r.savings_share || 0)).toFixed(1) + "%";
      return el("tr", {},
        el("td", { text: r.name }), el("td", { class: "n", text: usd(r.cost_usd) }),
        el("td", { class: "n", text: usd(r.baseline_usd) }),
        el("td", { class: "n good", text: usd(r.savings_usd) }),
        el("td", { class: "share" }, el("div", { class: "bar system" }, fill), el("span", { class: "note", text: pct(r.savings_share) })));
    })));
  box.replaceChildren(table);
  if (!anySaved) box.append(el("p", { class: "note", text: "Nothing saved yet: turn on caching, routing, trimming or prompt caching for a feature (spendgate recommend says where)." }));
}

function drawBudgets(rows) {
  const box = document.getElementById("budgets");
  if (!rows || !rows.length) { box.replaceChildren(el("p", { class: "empty", text: "no budgets" })); return; }
  const table = el("table", {}, el("thead", {}, el("tr", {},
    el("th", { text: "budget" }), el("th", { text: "period" }), el("th", { class: "n", text: "spent / limit" }), el("th", { text: "used" }))));
  const body = el("tbody");
  for (const b of rows) {
    const used = b.used == null ? 0 : b.used;
    const fill = el("i");
    fill.style.width = Math.min(100, 100 * used).toFixed(1) + "%";
    const bar = el("div", { class: "bar" + (used >= 1 ? " over" : used >= 0.8 ? " warn" : "") }, fill);
    body.append(el("tr", { title: b.name + (b.resets_at ? " · resets " + b.resets_at : "") },
      el("td", { text: `${b.name}: ${b.scope}` + (b.hard ? " (hard)" : " (soft)") }),
      el("td", { text: b.period }),
      el("td", { class: "n", text: `${usd(b.spent_usd)} / ${usd(b.limit_usd)}` }),
      el("td", {}, bar, el("span", { class: "note", text: pct(b.used) }))));
  }
  table.append(body);
  box.replaceChildren(table);
}

function drawEconomics(econ) {
  const box = document.getElementById("economics");
  const rows = econ ? econ.rows.filter(r => r.worth_usd_per_month != null) : [];
  if (!rows.length) {
    box.replaceChildren(el("p", { class: "empty", text: "no feature values configured (features: in the config)" }));
    return;
  }
  const cls = r => r.verdict === "profitable" ? "verdict-good" : "verdict-bad";
  box.replaceChildren(
    el("p", { class: "note", text: `${econ.month}${econ.month_complete ? "" : ", cost projected to the whole month"}` }),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: "feature" }), el("th", { class: "n", text: "cost/mo" }),
        el("th", { class: "n", text: "worth/mo" }), el("th", { class: "n", text: "worth÷cost" }), el("th", { text: "" }))),
      el("tbody", {}, ...rows.map(r => el("tr", {},
        el("td", { text: r.feature }), el("td", { class: "n", text: usd(r.projected_cost_usd) }),
        el("td", { class: "n", text: usd(r.worth_usd_per_month), title: r.worth_kind || "" }),
        el("td", { class: "n", text: r.worth_to_cost == null ? "—" : r.worth_to_cost.toFixed(2) + "×" }),
        el("td", { class: cls(r), text: r.verdict }))))));
}

function tokens(n) { return n == null ? "—" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 0 }); }

function drawSystemPrompts(sp) {
  const box = document.getElementById("system-prompts");
  const note = document.getElementById("system-note");
  if (!sp || !sp.rows.length) {
    const why = sp && sp.measured_calls
      ? `none of the ${int(sp.measured_calls)} calls measured in this range sent a system prompt`
      : "no call in this range was measured (accounting measures the system prompt of every call it prices; older ledger rows carry no measurement)";
    box.replaceChildren(el("p", { class: "empty", text: "No system prompts to show: " + why + "." }));
    note.textContent = "";
    return;
  }
  const month = sp.projected;
  const money = (range, perMonth) => usd(month ? perMonth : range);
  const per = month ? "/mo" : "";
  const shareCell = r => {
    const share = r.system_input_cost_share;
    const fill = el("i");
    fill.style.width = Math.min(100, 100 * (share || 0)).toFixed(1) + "%";
    return el("td", { class: "share" }, el("div", { class: "bar system" }, fill),
      el("span", { class: "note", text: pct(share) }));
  };
  const savingCell = r => {
    if (r.too_short_to_cache) {
      return el("td", { class: "n muted", text: "too short",
        title: `under ${int(sp.cache_min_tokens)} tokens: providers do not cache a prefix this short` });
    }
    return el("td", { class: "n good", text: money(r.caching_saving_usd, r.caching_saving_usd_month),
      title: r.unpriced_calls ? `${int(r.unpriced_calls)} calls have no known cache-read price` : "" });
  };
  const line = (name, r, cls) => el("tr", cls ? { class: cls } : {},
    el("td", { text: name, title: `${int(r.measured_calls)} of ${int(r.calls)} calls measured` }),
    el("td", { class: "n", text: tokens(r.avg_system_tokens) }),
    shareCell(r),
    el("td", { class: "n", text: money(r.system_input_cost_usd, r.system_usd_month) }),
    savingCell(r));
  box.replaceChildren(el("table", { id: "t-system" },
    el("thead", {}, el("tr", {},
      el("th", { text: "feature" }), el("th", { class: "n", text: "tokens / call" }),
      el("th", { text: "share of input spend" }), el("th", { class: "n", text: "system prompt " + (month ? "$/mo" : "$") }),
      el("th", { class: "n", text: "saving if cached " + (month ? "$/mo" : "$") }))),
    el("tbody", {}, ...sp.rows.map(r => line(r.feature, r))),
    el("tfoot", {}, line(sp.more ? `all features (${sp.rows.length + sp.more})` : "all features", sp.totals, "total"))));
  const basis = month ? `per month, projected from ${sp.days >= 2 ? Math.round(sp.days) + " days" : "the last " + (sp.days * 24).toFixed(0) + " hours"} of calls` : "in this range";
  note.textContent = `Spend ${basis}. Share = the system prompt's part of each call's input spend. ` +
    `Saving if cached = those tokens at the cache-read instead of the input price, as if every call ` +
    `read the system prompt from the provider's prompt cache (an upper bound: cache writes and expiries ` +
    `not counted; prompts under ${int(sp.cache_min_tokens)} tokens cannot be cached). Cuts the trim ` +
    `package suggests need the prompt text: spendgate analyze-prompts --prompt-file.` +
    (sp.partial ? " Tokens per call and caching saving cover the most recent events only." : "");
}

function drawAlerts(alerts) {
  const box = document.getElementById("alerts");
  if (alerts == null) { box.replaceChildren(el("p", { class: "empty", text: "alerts are not configured" })); return; }
  if (!alerts.length) { box.replaceChildren(el("p", { class: "empty", text: "no alerts sent" })); return; }
  box.replaceChildren(el("table", {}, el("tbody", {}, ...alerts.slice(0, 10).map(a => el("tr", {},
    el("td", { text: new Date(a.ts * 1000).toISOString().slice(0, 16).replace("T", " ") }),
    el("td", { text: a.kind }), el("td", { text: a.text }))))));
}

async function load() {
  const s = state();
  document.getElementById("f-since").value = s.since;
  const params = new URLSearchParams(s);
  const footer = document.getElementById("status");
  document.body.dataset.state = "loading";
  let resp;
  try {
    resp = await fetch("/dashboard/api/summary?" + params.toString(), { credentials: "same-origin" });
  } catch (err) {
    footer.textContent = "could not reach the gateway: " + err;
    document.body.dataset.state = "error";
    return;
  }
  if (resp.status === 401) { location.href = "/dashboard"; return; }
  const data = await resp.json();
  if (!resp.ok) {
    footer.textContent = "error: " + (data.error ? data.error.message : resp.status);
    document.body.dataset.state = "error";
    return;
  }
  last = data;
  for (const d of DIMS) fillSelect(d, data.options[d] || [], s[d]);
  drawKpis(data.totals);
  drawTime(data);
  for (const dim of ["feature", "team", "tenant", "user"]) drawTop(dim, data.top[dim]);
  drawSavings(data);
  drawModels(data.models);
  drawFeatureSavings(data.savings_by_feature);
  drawBudgets(data.budgets);
  drawEconomics(data.economics);
  drawSystemPrompts(data.system_prompts);
  drawAlerts(data.alerts);
  if (!data.admin_key_required) document.getElementById("logout").hidden = true;
  const range = data.range.since ? `${data.range.since.slice(0, 16)} → ${data.range.until.slice(0, 16)} UTC` : "all time";
  const partial = data.scan.partial ? ` · savings/cache panels computed over the first ${int(data.scan.events)} events` : "";
  footer.textContent = `${range} · ${int(data.totals.calls)} requests · computed in ${data.computed_ms} ms${partial}`;
  document.body.dataset.state = "ready";
  document.body.dataset.loads = String(++loads);
}

document.addEventListener("DOMContentLoaded", () => {
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#66707a";
  const form = document.getElementById("filters");
  form.addEventListener("change", () => {
    const s = {};
    for (const [k, v] of new FormData(form).entries()) if (v) s[k] = v;
    setState(s);
  });
  document.getElementById("f-clear").addEventListener("click", () => setState({ since: state().since }));
  document.getElementById("series-by").addEventListener("change", () => last && drawTime(last));
  load();
  // Refresh once a minute while the tab is visible (a wall display stays current).
  setInterval(() => { if (!document.hidden && document.body.dataset.state !== "loading") load(); }, 60000);
});
