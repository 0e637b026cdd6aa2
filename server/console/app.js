// The ironhub console: one page, no build step, no dependencies. Every figure comes from the
// public REST API (/api/v1/...), called with the token the user signs in with.
"use strict";

const session = {
  token: sessionStorage.getItem("ironhub.token"),
  role: null,       // "admin" or "tenant"
  tenant: null,     // the tenant shown (a tenant key's own; the admin picks one)
  timers: [],
};

// ---- helpers ----------------------------------------------------------------------------

/** An element: h("td", {class: "num"}, "12"). Strings become text nodes (never HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) {
    if (c !== undefined && c !== null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: {
      "Authorization": "Bearer " + session.token,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(data.message || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;
const fmt = (n) => Number(n || 0).toLocaleString("en-US");
const time = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
const hourOf = (ms) => new Date(ms).toISOString().slice(11, 16);
const discardedIn = (counts) =>
  Object.entries(counts || {}).filter(([k]) => k.startsWith("discarded.")).reduce((a, [, n]) => a + n, 0);

function showError(e) {
  const box = document.getElementById("error");
  if (!e) { box.hidden = true; return; }
  box.textContent = e.message || String(e);
  box.hidden = false;
}

/** Runs `f` now and every `ms` until the view changes; errors show in the banner. */
function every(ms, f) {
  const run = () => f().then(() => showError(null), showError);
  run();
  session.timers.push(setInterval(run, ms));
}

function view(...children) {
  const main = document.getElementById("view");
  main.replaceChildren(...children);
  return main;
}

function needTenant() {
  if (session.tenant) return false;
  view(h("p", { class: "muted" }, "Pick a tenant above (or create one under Tenants)."));
  return true;
}

// ---- charts -----------------------------------------------------------------------------

/** A line chart of series [{name, color, points: [y...]}] over the same x steps. */
function lineChart(series, label) {
  const W = 1000, H = 160, pad = 28;
  const n = Math.max(2, ...series.map((s) => s.points.length));
  const max = Math.max(1, ...series.flatMap((s) => s.points));
  const x = (i) => pad + (i * (W - pad * 2)) / (n - 1);
  const y = (v) => H - pad + 6 - (v / max) * (H - pad * 1.5);
  return svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": label },
    svg("text", { x: 4, y: 12 }, `${fmt(Math.round(max))}`),
    svg("text", { x: 4, y: H - 4 }, "0"),
    series.map((s) => svg("polyline", {
      fill: "none", stroke: s.color, "stroke-width": 2,
      points: s.points.map((v, i) => `${x(i)},${y(v)}`).join(" "),
    })));
}

/** Hourly bars: messages (accepted) and discarded, per hour of the last 24. */
function hourBars(last24h) {
  const W = 1000, H = 160, pad = 20, bw = (W - pad * 2) / 24;
  const rows = last24h.map(([at, c]) => ({ at, ok: Math.max(0, (c.messages || 0) - discardedIn(c)), bad: discardedIn(c) }));
  const max = Math.max(1, ...rows.map((r) => r.ok + r.bad));
  const hgt = (v) => (v / max) * (H - pad * 2);
  return svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "messages per hour" },
    svg("text", { x: 4, y: 12 }, fmt(max)),
    rows.map((r, i) => [
      svg("rect", { x: pad + i * bw + 2, width: bw - 4, y: H - pad - hgt(r.ok), height: hgt(r.ok), fill: "#2458d6" }),
      svg("rect", { x: pad + i * bw + 2, width: bw - 4, y: H - pad - hgt(r.ok) - hgt(r.bad), height: hgt(r.bad), fill: "#c0262d" }),
      i % 3 === 0 ? svg("text", { x: pad + i * bw + 2, y: H - 6 }, hourOf(r.at)) : null,
    ]));
}

const legend = (...items) => h("div", { class: "legend" }, items.map(([name, color]) => [h("i", { style: `background:${color}` }), name]));

// ---- views ------------------------------------------------------------------------------

/** Live rates: the hub's counters (admin) or the tenant's hourly usage (tenant), every 2 s. */
function overview() {
  const cards = h("div", { class: "cards", id: "overview-cards" });
  const chart = h("div", { id: "rate-chart" });
  const [first, second] = session.role === "admin"
    ? [["messages in", "#2458d6"], ["deliveries", "#17803d"]]
    : [["messages sent", "#2458d6"], ["discarded", "#c0262d"]];
  view(h("h1", {}, "Overview"), cards, h("h2", {}, "Live message rate (per second, last 2 minutes)"), chart,
    legend(first, second));
  const samples = [];
  let last = null;
  every(2000, async () => {
    let now;
    if (session.role === "admin") {
      const s = await api("GET", "/api/v1/stats");
      now = { at: Date.now(), in: s.messages_in, out: s.deliveries };
      cards.replaceChildren(
        metric("connections open", s.connections_open, "connections-open"),
        metric("messages in", s.messages_in, "messages-in"),
        metric("deliveries", s.deliveries, "deliveries"),
        metric("refused connects", s.connections_refused),
        metric("limited requests", Object.values(s.limited || {}).reduce((a, b) => a + b, 0)));
    } else {
      const u = await api("GET", `/api/v1/tenants/${enc(session.tenant)}/usage`);
      now = { at: Date.now(), in: u.usage.hour.messages || 0, out: discardedIn(u.usage.hour) };
      cards.replaceChildren(
        metric("messages this hour", u.usage.hour.messages, "messages-in"),
        metric("discarded this hour", discardedIn(u.usage.hour)),
        metric("messages today", u.usage.day.messages),
        metric("connections today", u.usage.day.connections));
    }
    if (last) {
      const secs = Math.max(0.001, (now.at - last.at) / 1000);
      samples.push({ in: Math.max(0, now.in - last.in) / secs, out: Math.max(0, now.out - last.out) / secs });
      if (samples.length > 60) samples.shift();
    }
    last = now;
    chart.replaceChildren(lineChart([
      { name: first[0], color: first[1], points: samples.map((s) => s.in) },
      { name: second[0], color: second[1], points: samples.map((s) => s.out) },
    ], "message rate"));
  });
}

function metric(label, value, id) {
  return h("div", { class: "metric" }, h("b", { id }, fmt(value)), h("span", {}, label));
}

async function tenants() {
  const list = h("tbody");
  const profiles = await api("GET", "/api/v1/profiles");
  const form = h("form", { class: "inline", id: "create-tenant" },
    h("label", {}, "Id", h("input", { name: "id", required: true, pattern: "[a-z0-9_-]{1,64}" })),
    h("label", {}, "Name", h("input", { name: "name" })),
    h("label", {}, "Profile", h("select", { name: "profile" }, profiles.map((p) => h("option", {}, p.name || p)))),
    h("button", { type: "submit" }, "Create tenant"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    api("POST", "/api/v1/tenants", { id: f.get("id"), name: f.get("name") || undefined, profile: f.get("profile") })
      .then(() => { form.reset(); return Promise.all([refresh(), loadTenants()]); }).catch(showError);
  });
  view(h("h1", {}, "Tenants"), form,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Id"), h("th", {}, "Name"), h("th", {}, "Profile"), h("th", {}, "Created"))), list));
  async function refresh() {
    const ts = await api("GET", "/api/v1/tenants");
    list.replaceChildren(...ts.map((t) => h("tr", { "data-tenant": t.id },
      h("td", {}, h("a", { href: "#/products", onclick: () => pickTenant(t.id) }, t.id)),
      h("td", {}, t.name), h("td", {}, t.profile), h("td", {}, time(t.created_at_ms)))));
  }
  await refresh();
}

async function products() {
  if (needTenant()) return;
  const list = h("tbody");
  const secret = h("div");
  const form = h("form", { class: "inline", id: "create-product" },
    h("label", {}, "Name", h("input", { name: "name", required: true })),
    h("label", {}, "Node type", h("select", { name: "node_type" }, h("option", {}, "device"), h("option", {}, "gateway"))),
    h("label", {}, "Dynamic registration", h("input", { name: "dynamic_registration", type: "checkbox" })),
    h("button", { type: "submit" }, "Create product"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    api("POST", "/api/v1/products", {
      tenant: session.tenant, name: f.get("name"), node_type: f.get("node_type"),
      dynamic_registration: f.get("dynamic_registration") === "on",
    }).then((p) => {
      form.reset();
      secret.replaceChildren(secretBox("Product created. Its ProductSecret is shown only now:", [
        ["ProductKey", p.product_key], ["ProductSecret", p.product_secret]]));
      return refresh();
    }).catch(showError);
  });
  view(h("h1", {}, `Products of ${session.tenant}`), form, secret,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "ProductKey"), h("th", {}, "Node type"), h("th", {}, "Created"))), list));
  async function refresh() {
    const ps = await api("GET", `/api/v1/products?tenant=${enc(session.tenant)}`);
    list.replaceChildren(...ps.map((p) => h("tr", { "data-product": p.product_key },
      h("td", {}, h("a", { href: `#/products/${enc(p.product_key)}` }, p.name)),
      h("td", {}, h("code", {}, p.product_key)), h("td", {}, p.node_type), h("td", {}, time(p.created_at_ms)))));
  }
  await refresh();
}

function secretBox(title, fields) {
  return h("div", { class: "card secret", id: "secret" },
    h("p", {}, h("b", {}, title)),
    h("table", {}, fields.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, h("code", { "data-field": k }, v))))));
}

async function product(pk) {
  const p = await api("GET", `/api/v1/products/${enc(pk)}`);
  const list = h("tbody", { id: "devices" });
  const secret = h("div");
  const search = h("input", { id: "device-search", type: "search", placeholder: "search devices" });
  let devices = [];
  const render = () => {
    const q = search.value.trim().toLowerCase();
    list.replaceChildren(...devices.filter((d) => d.device_name.toLowerCase().includes(q)).map((d) =>
      h("tr", { "data-device": d.device_name },
        h("td", {}, h("a", { href: `#/devices/${enc(pk)}/${enc(d.device_name)}` }, d.device_name)),
        h("td", {}, h("span", { class: `badge ${d.state}` }, d.state)),
        h("td", {}, time(d.created_at_ms)),
        h("td", {}, h("button", {
          class: "secondary", type: "button",
          onclick: () => api("POST", `/api/v1/products/${enc(pk)}/devices/${enc(d.device_name)}/${d.state === "disabled" ? "enable" : "disable"}`)
            .then(refresh).catch(showError),
        }, d.state === "disabled" ? "Enable" : "Disable")))));
  };
  search.addEventListener("input", render);
  const form = h("form", { class: "inline", id: "create-device" },
    h("label", {}, "DeviceName (empty: generated)", h("input", { name: "device_name", id: "device-name" })),
    h("button", { type: "submit" }, "Create device"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = new FormData(form).get("device_name");
    api("POST", `/api/v1/products/${enc(pk)}/devices`, name ? { device_name: name } : undefined).then((d) => {
      form.reset();
      secret.replaceChildren(secretBox("Device created. Its DeviceSecret is shown only now:", [
        ["ProductKey", d.product_key], ["DeviceName", d.device_name], ["DeviceSecret", d.device_secret],
        ["MQTT client id", `${d.product_key}.${d.device_name}|securemode=3,signmethod=hmacsha256|`],
        ["MQTT user name", `${d.device_name}&${d.product_key}`]]));
      return refresh();
    }).catch(showError);
  });
  view(h("h1", {}, `${p.name} `, h("code", {}, pk)),
    h("p", { class: "muted" }, `${p.node_type} product of ${p.tenant}, dynamic registration ${p.dynamic_registration ? "on" : "off"}`),
    form, secret, h("h2", {}, "Devices"), search,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "DeviceName"), h("th", {}, "State"), h("th", {}, "Created"), h("th", {}, ""))), list));
  async function refresh() {
    devices = await api("GET", `/api/v1/products/${enc(pk)}/devices`);
    render();
  }
  every(2000, refresh);
}

function device(pk, dn) {
  const base = `/api/v1/products/${enc(pk)}/devices/${enc(dn)}`;
  const head = h("div");
  const limits = h("p", { class: "muted", id: "device-limits" });
  const chart = h("div");
  const hours = h("tbody", { id: "hours" });
  const messages = h("tbody", { id: "messages" });
  const shadow = h("pre", { id: "shadow" });
  const subs = h("div", { id: "sub-devices" });
  const memberships = h("p", { class: "muted", id: "device-groups" });
  const desired = h("tbody", { id: "desired" });
  const properties = h("tbody", { id: "properties" });
  const propertyChart = h("div", { id: "property-chart" });
  let charted = null;
  view(head, limits, memberships, subs,
    h("h2", {}, "Properties"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Property"), h("th", {}, "Latest value"), h("th", {}, "At"))), properties),
    propertyChart,
    h("h2", {}, "Publishing status, last 24 hours"), chart, legend(["accepted", "#2458d6"], ["discarded", "#c0262d"]),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Hour (UTC)"), h("th", { class: "num" }, "Sent"), h("th", { class: "num" }, "Accepted"),
      h("th", { class: "num" }, "Data points"), h("th", { class: "num" }, "Discarded"), h("th", {}, "By limit"))), hours),
    h("h2", {}, "Last messages"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Received"), h("th", {}, "Topic"), h("th", {}, "QoS"),
      h("th", { class: "num" }, "Bytes"), h("th", {}, "Payload"))), messages),
    h("h2", {}, "Shadow"), shadow,
    ...(session.role === "tenant" ? [...thingForms(pk, dn), h("h2", {}, "Desired values"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Property"), h("th", {}, "Desired"), h("th", { class: "num" }, "Version"), h("th", {}, "Set"))), desired)] : []));
  every(2000, async () => {
    const [d, usage, recent, sh, carried] = await Promise.all([
      api("GET", base), api("GET", `${base}/usage`), api("GET", `${base}/messages`),
      api("GET", `${base}/shadow`).catch(() => null),
      api("GET", `${base}/sub-devices`).catch(() => []),
    ]);
    // A gateway lists the sub-devices it carries, online or not.
    subs.replaceChildren(...(carried.length ? [h("h2", {}, `Sub-devices (${carried.filter((s) => s.online).length} of ${carried.length} online)`),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "Product"), h("th", {}, "State"))),
        h("tbody", {}, ...carried.map((s) => h("tr", { "data-sub-device": s.deviceName },
          h("td", {}, h("a", { href: `#/devices/${enc(s.productKey)}/${enc(s.deviceName)}` }, s.deviceName)),
          h("td", {}, h("code", {}, s.productKey)),
          h("td", {}, h("span", { class: `badge ${s.online ? "online" : "offline"}` }, s.online ? "online" : "offline"))))))] : []));
    const toggle = d.state === "disabled" ? "enable" : "disable";
    head.replaceChildren(h("h1", {}, `${dn} `, h("span", { class: `badge ${d.state}`, id: "device-state" }, d.state)),
      h("p", { class: "muted" }, `product `, h("a", { href: `#/products/${enc(pk)}` }, pk), `, tenant ${d.tenant}, created ${time(d.created_at_ms)} `,
        h("button", { class: "secondary", type: "button", onclick: () => api("POST", `${base}/${toggle}`).then(() => route()).catch(showError) },
          toggle === "enable" ? "Enable" : "Disable")));
    const r = usage.profile.rates;
    limits.textContent = `Publishing limits in force: ${fmt(usage.profile.data_points_per_hour)} data points per hour (sliding window); ` +
      `QoS 0 ${r.device_messages_qos0 || "unlimited"}, QoS 1 ${r.device_messages_qos1 || "unlimited"} (capacity:seconds).`;
    chart.replaceChildren(hourBars(usage.usage.last_24h));
    const rows = usage.usage.last_24h.filter(([, c]) => Object.keys(c).length > 0).reverse();
    hours.replaceChildren(...(rows.length ? rows.map(([at, c]) => {
      const by = Object.entries(c).filter(([k]) => k.startsWith("discarded.")).map(([k, n]) => `${k.slice(10)}: ${fmt(n)}`).join(", ");
      return h("tr", { "data-hour": at },
        h("td", {}, hourOf(at)), h("td", { class: "num" }, fmt(c.messages)),
        h("td", { class: "num" }, fmt((c.messages || 0) - discardedIn(c))), h("td", { class: "num" }, fmt(c.data_points)),
        h("td", { class: discardedIn(c) ? "num discarded" : "num" }, fmt(discardedIn(c))), h("td", {}, by));
    }) : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "Nothing published in the last 24 hours."))]));
    messages.replaceChildren(...(recent.messages.length ? recent.messages.map((m) => h("tr", {},
      h("td", {}, time(m.at_ms)), h("td", {}, h("code", {}, m.topic)), h("td", {}, m.qos), h("td", { class: "num" }, fmt(m.bytes)),
      h("td", {}, h("code", {}, m.preview + (m.truncated ? " …" : "")), m.encoding === "base64" ? " (base64)" : ""))) :
      [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No messages since this node started."))]));
    shadow.textContent = sh ? JSON.stringify(sh, null, 2) : "no shadow";
    const [info, ins] = await Promise.all([api("GET", `${base}/info`), api("GET", `${base}/groups`)]);
    memberships.replaceChildren("Groups: ", ...(ins.length ? ins.flatMap((g, i) => [i ? ", " : "",
      h("a", { href: `#/groups/${enc(g.id)}` }, g.name)]) : ["none"]),
      ` · Tags: ${Object.entries(info.tags).map(([k, v]) => `${k}=${v}`).join(", ") || "none"}`);
    if (session.role === "tenant") {
      const wanted = await api("GET", `/api/v1/business/devices/${enc(pk)}/${enc(dn)}/desired`);
      desired.replaceChildren(...(Object.keys(wanted).length ? Object.entries(wanted).map(([k, v]) => h("tr", { "data-desired": k },
        h("td", {}, k), h("td", {}, h("code", {}, JSON.stringify(v.value))), h("td", { class: "num" }, fmt(v.version)), h("td", {}, time(v.time_ms)))) :
        [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No desired value."))]));
    }
    // The latest value of each property; a numeric one (the one clicked) charted over 24 hours.
    const latest = await api("GET", `${base}/properties`);
    const names = Object.keys(latest);
    properties.replaceChildren(...(names.length ? names.map((k) => h("tr", { "data-property": k },
      h("td", {}, h("a", { href: "javascript:void 0", onclick: () => { charted = k; } }, k)),
      h("td", { class: "value" }, h("code", {}, JSON.stringify(latest[k].value))), h("td", {}, time(latest[k].time_ms)))) :
      [h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No property posted within the retention."))]));
    if (!charted || !latest[charted]) charted = names.find((k) => typeof latest[k].value === "number") || null;
    if (charted) {
      const step = 1_800_000, from = Date.now() - 86_400_000;
      const buckets = await api("GET",
        `${base}/properties/${enc(charted)}/series?from_ms=${from}&to_ms=${from + 48 * step}&interval_ms=${step}`);
      // 48 half hours; one without a value keeps the previous one (the first known before).
      const avg = new Map(buckets.filter((b) => b.avg !== null).map((b) => [Math.round((b.start_ms - from) / step), b.avg]));
      let last = avg.size ? avg.values().next().value : 0;
      const points = Array.from({ length: 48 }, (_, i) => (last = avg.has(i) ? avg.get(i) : last));
      propertyChart.replaceChildren(h("h3", {}, `${charted}, last 24 hours (average per half hour)`),
        lineChart([{ name: charted, color: "#2458d6", points }], charted));
    } else {
      propertyChart.replaceChildren();
    }
  });
}

/** Business calls on a device's thing model (a tenant key's): a property set, a service call,
 * a desired value; each shows its answer. */
function thingForms(pk, dn) {
  const out = h("pre", { id: "thing-result" });
  const json = (text) => { try { return JSON.parse(text); } catch { return text; } };
  const form = (id, label, fields, send) => {
    const f = h("form", { class: "inline", id }, ...fields.map(([name, title]) =>
      h("label", {}, title, h("input", { name, id: `${id}-${name}`, required: true }))), h("button", { type: "submit" }, label));
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const data = Object.fromEntries(new FormData(f));
      out.textContent = "…";
      send(data).then((r) => { out.textContent = JSON.stringify(r, null, 2); }).catch(showError);
    });
    return f;
  };
  const device = `/api/v1/business/devices/${enc(pk)}/${enc(dn)}`;
  return [h("h2", {}, "Thing model"),
    form("set-property", "Set property", [["property", "Property"], ["value", "Value (JSON)"]], (d) =>
      api("POST", "/api/v1/business/properties/set",
        { product_key: pk, device_name: dn, params: { [d.property]: json(d.value) }, timeout_ms: 3000 })),
    form("invoke-service", "Call service", [["service", "Service"], ["params", "Input (JSON object)"]], async (d) => {
      const sent = await api("POST", "/api/v1/business/services/invoke",
        { product_key: pk, device_name: dn, service: d.service, params: json(d.params) });
      if (!sent.message_id) return sent;
      await new Promise((r) => setTimeout(r, 2000));
      return api("GET", `${device}/services/${enc(sent.message_id)}`);
    }),
    form("set-desired", "Set desired value", [["property", "Property"], ["value", "Value (JSON)"]], (d) =>
      api("PUT", `${device}/desired`, { params: { [d.property]: json(d.value) } })),
    out];
}

const COMPONENTS = {
  transport_messages: "Transport messages",
  transport_data_points: "Transport data points",
  rule_executions: "Rule executions",
  js_executions: "Parsing script executions",
  stored_point_days: "Stored data-point-days",
};

/** Seed 001's API usage dashboard: monthly limits (80 % warning, 100 % disabled), hour, day. */
function usage() {
  if (needTenant()) return;
  const monthly = h("tbody", { id: "monthly" });
  const periods = h("tbody", { id: "periods" });
  const rates = h("tbody", { id: "rates" });
  const chart = h("div");
  const events = h("tbody", { id: "events" });
  view(h("h1", {}, `API usage of ${session.tenant}`),
    h("h2", {}, "Monthly limits"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Component"), h("th", { class: "num" }, "Used this month"),
      h("th", { class: "num" }, "Limit"), h("th", {}, ""), h("th", {}, "State"))), monthly),
    h("h2", {}, "This hour, today, this month"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Counter"), h("th", { class: "num" }, "Hour"),
      h("th", { class: "num" }, "Day"), h("th", { class: "num" }, "Month"))), periods),
    h("h2", {}, "Messages per hour, last 24 hours"), chart, legend(["accepted", "#2458d6"], ["discarded", "#c0262d"]),
    h("h2", {}, "Rate limits in force"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Limit"), h("th", {}, "capacity:seconds"))), rates),
    h("h2", {}, "Usage events"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Limit"), h("th", {}, "Event"), h("th", { class: "num" }, "Used"), h("th", { class: "num" }, "Of"))), events));
  every(2000, async () => {
    const u = await api("GET", `/api/v1/tenants/${enc(session.tenant)}/usage`);
    monthly.replaceChildren(...u.monthly.map((m) => {
      const pct = m.limit_value ? Math.min(100, (100 * m.used) / m.limit_value) : 0;
      const state = m.state === "warning" ? "80 % reached" : m.state === "disabled" ? "disabled until the month ends" : "ok";
      return h("tr", { class: m.state, "data-component": m.component },
        h("td", {}, `${COMPONENTS[m.component] || m.component} (${m.limit})`),
        h("td", { class: "num used" }, fmt(m.used)),
        h("td", { class: "num" }, m.limit_value ? fmt(m.limit_value) : "unlimited"),
        h("td", {}, h("div", { class: "bar", title: `${pct.toFixed(1)} %` }, h("i", { style: `width:${pct}%` }))),
        h("td", { class: "state" }, state));
    }));
    const names = new Set([...Object.keys(u.usage.hour), ...Object.keys(u.usage.day), ...Object.keys(u.usage.month)]);
    periods.replaceChildren(...[...names].sort().map((k) => h("tr", { "data-counter": k },
      h("td", {}, k), h("td", { class: "num" }, fmt(u.usage.hour[k])), h("td", { class: "num" }, fmt(u.usage.day[k])),
      h("td", { class: "num" }, fmt(u.usage.month[k])))));
    chart.replaceChildren(hourBars(u.usage.last_24h));
    rates.replaceChildren(...Object.entries(u.profile.rates).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v || "unlimited"))));
    events.replaceChildren(...(u.events.length ? u.events.slice().reverse().map((e) => h("tr", { class: e.kind },
      h("td", {}, time(e.at_ms)), h("td", {}, e.limit), h("td", {}, e.kind), h("td", { class: "num" }, fmt(e.used)), h("td", { class: "num" }, fmt(e.limit_value)))) :
      [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No usage events this month."))]));
  });
}

// ---- firmware upgrades --------------------------------------------------------------------

const OTA_STATES = ["queued", "notified", "in_progress", "succeeded", "failed", "canceled", "timed_out"];

/** A batch's progress: the share of its jobs that ended, and of those that succeeded. */
function batchBar(b) {
  const ended = ["succeeded", "failed", "canceled", "timed_out"].reduce((n, k) => n + (b.counts[k] || 0), 0);
  const pct = b.devices ? (100 * (b.counts.succeeded || 0)) / b.devices : 0;
  return h("div", { class: "bar", title: `${ended} of ${b.devices} ended, ${b.counts.succeeded || 0} succeeded` },
    h("i", { style: `width:${pct}%` }));
}

/** The tenant's firmware packages and upgrade batches with their counts per state, every 2 s. */
function ota() {
  if (needTenant()) return;
  const base = `/api/v1/tenants/${enc(session.tenant)}/ota`;
  const packages = h("tbody", { id: "packages" });
  const batches = h("tbody", { id: "batches" });
  view(h("h1", {}, `Firmware upgrades of ${session.tenant}`),
    h("p", { class: "muted" }, "Upload packages and start batches with the API or ", h("code", {}, "ironhub ota"), "."),
    h("h2", {}, "Batches"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Batch"), h("th", {}, "Product"), h("th", {}, "Version"),
      ...OTA_STATES.map((s) => h("th", { class: "num" }, s.replace("_", " "))), h("th", {}, "Succeeded"))), batches),
    h("h2", {}, "Packages"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Id"), h("th", {}, "Product"), h("th", {}, "Module"),
      h("th", {}, "Version"), h("th", { class: "num" }, "Bytes"), h("th", {}, "Uploaded"))), packages));
  every(2000, async () => {
    const [ps, bs] = await Promise.all([api("GET", `${base}/packages`), api("GET", `${base}/batches`)]);
    batches.replaceChildren(...(bs.length ? bs.slice().reverse().map((b) => h("tr", { "data-batch": b.id, class: b.canceled ? "canceled" : "" },
      h("td", {}, h("a", { href: `#/ota/${enc(b.id)}` }, b.id), b.canceled ? " (canceled)" : ""),
      h("td", {}, h("code", {}, b.product_key)), h("td", {}, `${b.module} ${b.version}`),
      ...OTA_STATES.map((s) => h("td", { class: `num ${s}` }, fmt(b.counts[s]))),
      h("td", {}, batchBar(b)))) :
      [h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No batch yet."))]));
    packages.replaceChildren(...ps.map((p) => h("tr", { "data-package": p.id },
      h("td", {}, h("code", {}, p.id)), h("td", {}, h("code", {}, p.product_key)), h("td", {}, p.module),
      h("td", {}, p.version), h("td", { class: "num" }, fmt(p.size)), h("td", {}, time(p.created_at_ms)))));
  });
}

/** One batch: its counts, each device's job, and cancel / retry. */
function otaBatch(id) {
  if (needTenant()) return;
  const path = `/api/v1/tenants/${enc(session.tenant)}/ota/batches/${enc(id)}`;
  const summary = h("p", { id: "batch-summary" });
  const jobs = h("tbody", { id: "jobs" });
  const act = (what) => api("POST", `${path}/${what}`).then(() => route()).catch(showError);
  view(h("h1", {}, `Batch ${id}`), summary,
    h("p", {}, h("button", { id: "batch-cancel", type: "button", class: "secondary", onclick: () => act("cancel") }, "Cancel batch"), " ",
      h("button", { id: "batch-retry", type: "button", class: "secondary", onclick: () => act("retry") }, "Retry failed and timed out")),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "State"), h("th", { class: "num" }, "Step"),
      h("th", {}, "Description"), h("th", {}, "From version"), h("th", { class: "num" }, "Retries"), h("th", {}, "Changed"))), jobs));
  every(2000, async () => {
    const [b, js] = await Promise.all([api("GET", path), api("GET", `${path}/jobs`)]);
    summary.replaceChildren(`${b.module} ${b.version} to ${fmt(b.devices)} devices of `, h("code", {}, b.product_key),
      b.rate_per_minute ? `, ${fmt(b.rate_per_minute)} a minute` : "", b.canceled ? " (canceled)" : "", " ", batchBar(b));
    jobs.replaceChildren(...js.map((j) => h("tr", { "data-job": j.device_name },
      h("td", {}, h("a", { href: `#/devices/${enc(b.product_key)}/${enc(j.device_name)}` }, j.device_name)),
      h("td", {}, h("span", { class: `badge ${j.state}` }, j.state.replace("_", " "))),
      h("td", { class: "num" }, String(j.step)), h("td", {}, j.desc), h("td", {}, j.source_version || ""),
      h("td", { class: "num" }, fmt(j.retries)), h("td", {}, time(j.updated_at_ms)))));
  });
}

/** The tenant's device groups (sub-groups under their parent), and a form to create one. */
function groups() {
  if (needTenant()) return;
  const base = `/api/v1/tenants/${enc(session.tenant)}/device-groups`;
  const rows = h("tbody", { id: "groups" });
  const parent = h("select", { name: "parent_id", id: "group-parent" });
  const form = h("form", { class: "inline", id: "create-group" },
    h("label", {}, "Name", h("input", { name: "name", id: "group-name", required: true })),
    h("label", {}, "Sub-group of", parent),
    h("button", { type: "submit" }, "Create group"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    api("POST", base, { name: data.get("name"), parent_id: data.get("parent_id") || null })
      .then(() => { form.reset(); return refresh(); }).catch(showError);
  });
  view(h("h1", {}, `Device groups of ${session.tenant}`),
    h("p", { class: "muted" }, "Groups gather devices of any product; the business API addresses them at once (a message, a property set, events) and upgrade batches can target them."),
    form,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", {}, "Sub-group of"), h("th", { class: "num" }, "Devices"),
      h("th", {}, "Tags"))), rows));
  async function refresh() {
    const gs = await api("GET", base);
    const names = new Map(gs.map((g) => [g.id, g.name]));
    const chosen = parent.value;
    parent.replaceChildren(h("option", { value: "" }, "—"), ...gs.map((g) => h("option", { value: g.id }, g.name)));
    parent.value = chosen;
    rows.replaceChildren(...(gs.length ? gs.map((g) => h("tr", { "data-group": g.name },
      h("td", {}, h("a", { href: `#/groups/${enc(g.id)}` }, g.name)),
      h("td", {}, g.parent_id ? names.get(g.parent_id) || g.parent_id : ""),
      h("td", { class: "num" }, fmt(g.device_count)),
      h("td", {}, Object.entries(g.tags).map(([k, v]) => `${k}=${v}`).join(", ")))) :
      [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No group yet."))]));
  }
  every(2000, refresh);
}

/** One group: its devices (add one, remove one) and its tags. */
function group(id) {
  if (needTenant()) return;
  const base = `/api/v1/tenants/${enc(session.tenant)}/device-groups/${enc(id)}`;
  const head = h("div");
  const members = h("tbody", { id: "members" });
  const form = h("form", { class: "inline", id: "add-device" },
    h("label", {}, "ProductKey", h("input", { name: "product_key", id: "member-product", required: true })),
    h("label", {}, "DeviceName", h("input", { name: "device_name", id: "member-device", required: true })),
    h("button", { type: "submit" }, "Add device"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    api("POST", `${base}/devices`, { devices: [{ product_key: data.get("product_key"), device_name: data.get("device_name") }] })
      .then(() => { form.reset(); return refresh(); }).catch(showError);
  });
  view(head, form, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "Product"), h("th", {}, ""))), members));
  async function refresh() {
    const [g, page] = await Promise.all([api("GET", base), api("GET", `${base}/devices?limit=1000`)]);
    head.replaceChildren(h("h1", {}, `${g.name} `, h("span", { class: "muted", id: "group-count" }, `${fmt(g.device_count)} device${g.device_count === 1 ? "" : "s"}`)),
      h("p", { class: "muted" }, `Tags: ${Object.entries(g.tags).map(([k, v]) => `${k}=${v}`).join(", ") || "none"}`));
    members.replaceChildren(...page.devices.map((d) => h("tr", { "data-member": d.device_name },
      h("td", {}, h("a", { href: `#/devices/${enc(d.product_key)}/${enc(d.device_name)}` }, d.device_name)),
      h("td", {}, h("code", {}, d.product_key)),
      h("td", {}, h("button", { class: "secondary", type: "button",
        onclick: () => api("DELETE", `${base}/devices/${enc(d.product_key)}/${enc(d.device_name)}`).then(refresh).catch(showError) }, "Remove")))));
  }
  every(2000, refresh);
}

// ---- sign-in, tenant picker, routing ------------------------------------------------------

async function loadTenants() {
  const select = document.getElementById("tenant-select");
  const ts = await api("GET", "/api/v1/tenants");
  select.replaceChildren(h("option", { value: "" }, "—"), ...ts.map((t) => h("option", { value: t.id }, t.id)));
  if (!session.tenant && ts.length) session.tenant = sessionStorage.getItem("ironhub.tenant") || ts[0].id;
  select.value = session.tenant || "";
}

function pickTenant(id) {
  session.tenant = id || null;
  sessionStorage.setItem("ironhub.tenant", id || "");
  document.getElementById("tenant-select").value = id || "";
}

async function signIn(token) {
  session.token = token;
  const who = await api("GET", "/api/v1/whoami");
  sessionStorage.setItem("ironhub.token", token);
  session.role = who.role;
  session.tenant = who.role === "tenant" ? who.tenant : null;
  for (const el of document.querySelectorAll("[data-role=admin]")) el.hidden = who.role !== "admin";
  document.getElementById("who").textContent = who.role === "admin" ? "admin" : `tenant ${who.tenant}`;
  document.getElementById("nav").hidden = false;
  if (who.role === "admin") await loadTenants();
}

function signOut() {
  sessionStorage.clear();
  location.hash = "";
  location.reload();
}

function route() {
  session.timers.forEach(clearInterval);
  session.timers = [];
  showError(null);
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === "#/" + (parts[0] || ""));
  }
  const go = {
    "": overview, tenants, products, usage, ota, groups,
  }[parts[0]];
  let shown;
  if (parts[0] === "products" && parts[1]) shown = product(parts[1]);
  else if (parts[0] === "devices" && parts[2] !== undefined) shown = device(parts[1], parts[2]);
  else if (parts[0] === "ota" && parts[1]) shown = otaBatch(parts[1]);
  else if (parts[0] === "groups" && parts[1]) shown = group(parts[1]);
  else if (go) shown = go();
  else shown = overview();
  Promise.resolve(shown).catch(showError);
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn(document.getElementById("token").value.trim()).then(route, (e) => {
    session.token = null;
    showError(e.status === 401 ? new Error("That token is not accepted.") : e);
  });
});
document.getElementById("sign-out").addEventListener("click", signOut);
document.getElementById("tenant-select").addEventListener("change", (ev) => { pickTenant(ev.target.value); route(); });
window.addEventListener("hashchange", () => { if (session.role) route(); });
if (session.token) signIn(session.token).then(route, () => { session.token = null; sessionStorage.clear(); });
