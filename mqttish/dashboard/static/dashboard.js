// mqttish live dashboard: connects back to the broker that served it, over MQTT over
// WebSocket with MQTT.js, and shows $SYS statistics, the topic tree and a live chart.
//
// Messages are recorded as they arrive and drawn by a timer (FLUSH_MS), so a busy broker
// costs one DOM update per topic and one chart update per tick, not one per message.
/* global mqtt, Chart */
"use strict";

(() => {
  const FLUSH_MS = 150;
  const MAX_POINTS = 3000;        // per chart series
  const MIN_SPAN_MS = 10000;      // the shortest time axis: a lone point is not squeezed
  const MAX_VALUE_CHARS = 120;    // shown in the tree
  const DEFAULT_CHART = ["sensors/+/+/temperature"];
  const STORAGE_KEY = "mqttish.dashboard.chart";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
                  "#db2777", "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#9333ea"];

  const $ = (id) => document.getElementById(id);
  const body = document.body;

  // ------------------------------------------------------------------ topics

  /** MQTT topic filter matching (a '$' topic is not matched by a leading wildcard). */
  function matches(filter, topic) {
    const f = filter.split("/");
    const t = topic.split("/");
    if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
    for (let i = 0; i < f.length; i++) {
      if (f[i] === "#") return true;
      if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) return false;
    }
    return f.length === t.length;
  }

  function filterProblem(filter) {
    if (!filter) return "enter a topic filter";
    const levels = filter.split("/");
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i];
      if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
        return "'#' must be a whole level and the last one";
      }
      if (level.includes("+") && level !== "+") return "'+' must be a whole level";
    }
    return null;
  }

  const decoder = new TextDecoder("utf-8", { fatal: true });

  function payloadText(payload) {
    try {
      return decoder.decode(payload);
    } catch {
      const hex = Array.from(payload.slice(0, 24), (b) => b.toString(16).padStart(2, "0"));
      return `<${payload.length} bytes: ${hex.join(" ")}${payload.length > 24 ? " …" : ""}>`;
    }
  }

  /** A number from a plain numeric payload, or from JSON with a numeric "value". */
  function numericValue(text) {
    const trimmed = text.trim();
    if (!trimmed) return null;
    const number = Number(trimmed);
    if (Number.isFinite(number)) return { value: number, unit: "" };
    if (trimmed[0] !== "{") return null;
    try {
      const parsed = JSON.parse(trimmed);
      if (parsed && typeof parsed.value === "number" && Number.isFinite(parsed.value)) {
        return { value: parsed.value, unit: typeof parsed.unit === "string" ? parsed.unit : "" };
      }
    } catch {
      // not JSON: not a number either
    }
    return null;
  }

  function formatNumber(n) {
    if (Number.isInteger(n)) return n.toLocaleString();
    return n.toLocaleString(undefined, { maximumFractionDigits: 2 });
  }

  function formatBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toLocaleString(undefined, { maximumFractionDigits: i ? 1 : 0 })} ${units[i]}`;
  }

  function formatTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function formatDuration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = Math.floor(seconds % 60);
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  // ------------------------------------------------------------------ $SYS cards

  const SYS = "$SYS/broker/";
  const CARDS = [
    { id: "clients", label: "clients connected", topic: "clients/connected",
      detail: (v) => `max ${v("clients/maximum")} · sessions ${v("clients/total")}` },
    { id: "in", label: "messages in / min", topic: "load/publish/received/1min",
      detail: (v) => `${v("publish/messages/received")} received` },
    { id: "out", label: "messages out / min", topic: "load/publish/sent/1min",
      detail: (v) => `${v("publish/messages/sent")} sent` },
    { id: "dropped", label: "dropped", topic: "publish/messages/dropped",
      detail: (v) => `${v("load/publish/dropped/5min")} / min (5 min)` },
    { id: "bytes-in", label: "bytes in / min", topic: "load/bytes/received/1min", bytes: true,
      detail: (v) => `${formatBytes(Number(v("bytes/received")) || 0)} total` },
    { id: "bytes-out", label: "bytes out / min", topic: "load/bytes/sent/1min", bytes: true,
      detail: (v) => `${formatBytes(Number(v("bytes/sent")) || 0)} total` },
    { id: "retained", label: "retained messages", topic: "retained messages/count",
      detail: (v) => `${v("store/messages/count")} stored` },
    { id: "subscriptions", label: "subscriptions", topic: "subscriptions/count",
      detail: (v) => `${v("shared/count")} shared groups` },
    { id: "store", label: "store on disk", topic: "persistence/size", bytes: true,
      detail: (v) => sys.has("persistence/size")
        ? `commit ${v("persistence/commit/latency")} · batch ${v("persistence/commit/batch")}`
        : "persistence off" },
  ];
  const sys = new Map();

  function buildCards() {
    const container = $("stats");
    for (const card of CARDS) {
      const el = document.createElement("div");
      el.className = "card";
      el.id = `card-${card.id}`;
      el.innerHTML = '<div class="card-value">–</div><div class="card-label"></div>' +
        '<div class="card-detail muted"></div>';
      el.querySelector(".card-label").textContent = card.label;
      card.el = el;
      container.appendChild(el);
    }
  }

  function renderCards() {
    const value = (topic) => sys.get(topic) ?? "–";
    for (const card of CARDS) {
      const raw = sys.get(card.topic);
      let shown = "–";
      if (raw !== undefined) {
        const n = Number(raw);
        shown = Number.isFinite(n) ? (card.bytes ? formatBytes(n) : formatNumber(n)) : raw;
      }
      card.el.querySelector(".card-value").textContent = shown;
      card.el.querySelector(".card-detail").textContent = card.detail(value);
    }
    if (sys.has("version")) $("version").textContent = sys.get("version");
    const uptime = parseInt(sys.get("uptime"), 10);
    if (Number.isFinite(uptime)) $("uptime").textContent = `up ${formatDuration(uptime)}`;
  }

  /** The nodes of a cluster, from $SYS/broker/cluster/nodes (absent on a single broker). */
  function renderNodes() {
    const raw = sys.get("cluster/nodes");
    if (raw === undefined) return;
    let nodes;
    try {
      nodes = JSON.parse(raw);
    } catch {
      return;
    }
    const here = sys.get("cluster/node");
    const body = $("nodes").querySelector("tbody");
    body.replaceChildren();
    const members = Object.keys(nodes).sort();
    for (const member of members) {
      const node = nodes[member];
      const row = document.createElement("tr");
      row.dataset.member = member;
      if (member === here) row.classList.add("here");
      for (const value of [node.node_id + (member === here ? " (this node)" : ""),
        formatNumber(node.clients), formatNumber(node.sessions), formatNumber(node.received),
        formatNumber(node.sent), Number(node.load).toFixed(2)]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
    $("node-count").textContent = String(members.length);
    $("nodes-panel").hidden = false;
  }

  // ------------------------------------------------------------------ bridges

  // $SYS/broker/connection/<name>/state (1 up, 0 down) and the figures mqttish's own
  // bridges publish beside it; a bridge of another broker into this one shows its state.
  const BRIDGE_FIGURES = ["address", "messages/sent", "messages/received", "messages/dropped",
                          "messages/queued"];

  function renderBridges() {
    const names = [];
    for (const key of sys.keys()) {
      const match = /^connection\/([^/]+)\/state$/.exec(key);
      if (match && sys.get(key) !== "") names.push(match[1]);
    }
    names.sort();
    $("bridges-panel").hidden = names.length === 0;
    const rows = names.map((name) => {
      const row = document.createElement("tr");
      const up = sys.get(`connection/${name}/state`);
      const cells = [name, up === "1" ? "up" : "down",
        ...BRIDGE_FIGURES.map((figure) => sys.get(`connection/${name}/${figure}`) ?? "–")];
      cells.forEach((text, index) => {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (index === 1) { cell.className = "bridge-state"; cell.dataset.up = up; }
        row.appendChild(cell);
      });
      row.dataset.bridge = name;
      return row;
    });
    $("bridges").querySelector("tbody").replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ topic tree

  class TreeNode {
    constructor(name, path, depth) {
      this.name = name;
      this.path = path;          // full topic of this node
      this.depth = depth;
      this.children = new Map();
      this.topics = 0;           // topics with a value at or below this node
      this.value = null;
      this.el = null;
    }

    /** Lazily build this node's <li>. */
    element() {
      if (this.el) return this.el;
      const li = document.createElement("li");
      li.className = "node";
      li.setAttribute("role", "treeitem");
      li.dataset.topic = this.path;
      const row = document.createElement("div");
      row.className = "row";
      row.innerHTML = '<button class="toggle" tabindex="-1" aria-label="expand"></button>' +
        '<span class="name"></span><span class="count badge"></span>' +
        '<span class="value"></span><span class="retain" title="retained">R</span>' +
        '<time class="time"></time>';
      row.querySelector(".name").textContent = this.name === "" ? "(empty)" : this.name;
      li.appendChild(row);
      const ul = document.createElement("ul");
      ul.setAttribute("role", "group");
      li.appendChild(ul);
      const collapsed = this.path.startsWith("$") || this.depth >= 3;
      li.classList.toggle("collapsed", collapsed);
      row.querySelector(".toggle").addEventListener("click", () => {
        li.classList.toggle("collapsed");
      });
      row.querySelector(".name").addEventListener("click", () => {
        li.classList.toggle("collapsed");
      });
      this.el = li;
      return li;
    }

    childList() {
      return this.element().querySelector(":scope > ul");
    }
  }

  const root = new TreeNode("", "", -1);
  const rootList = document.createElement("ul");
  rootList.className = "tree-root";
  const pendingTree = new Map();   // topic -> {text, time, retain}
  let topicCount = 0;

  function insertSorted(list, parent, child) {
    const names = Array.from(parent.children.keys()).sort();
    const index = names.indexOf(child.name);
    const next = names[index + 1];
    const before = next === undefined ? null : parent.children.get(next).element();
    list.insertBefore(child.element(), before);
  }

  function treeUpdate(topic, update) {
    const levels = topic.split("/");
    let node = root;
    const path = [];
    for (let i = 0; i < levels.length; i++) {
      path.push(levels[i]);
      let child = node.children.get(levels[i]);
      if (!child) {
        child = new TreeNode(levels[i], path.join("/"), i);
        node.children.set(levels[i], child);
        insertSorted(node === root ? rootList : node.childList(), node, child);
      }
      node = child;
    }
    if (node.value === null) {  // a new topic: count it on every level above
      topicCount += 1;
      let walk = root;
      for (const level of levels) {
        walk = walk.children.get(level);
        walk.topics += 1;
        if (walk !== node) {
          walk.element().querySelector(":scope > .row .count").textContent = String(walk.topics);
        }
      }
    }
    node.value = update;
    const li = node.element();
    li.classList.add("has-value");
    const row = li.querySelector(":scope > .row");
    const shown = row.querySelector(".value");
    shown.textContent = update.text.length > MAX_VALUE_CHARS ?
      update.text.slice(0, MAX_VALUE_CHARS) + "…" : update.text;
    shown.title = update.text.slice(0, 2000);
    row.classList.toggle("retained", update.retain);
    const time = row.querySelector(".time");
    time.textContent = formatTime(update.time);
    time.dateTime = new Date(update.time).toISOString();
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight animation
    row.classList.add("flash");
  }

  function flushTree() {
    if (!pendingTree.size) return;
    for (const [topic, update] of pendingTree) treeUpdate(topic, update);
    pendingTree.clear();
    $("topic-count").textContent = String(topicCount);
    applySearch();
  }

  function applySearch() {
    const needle = $("tree-search").value.trim().toLowerCase();
    rootList.classList.toggle("searching", Boolean(needle));
    if (!needle) {
      for (const el of rootList.querySelectorAll(".node.hit, .node.miss")) {
        el.classList.remove("hit", "miss");
      }
      return;
    }
    const visit = (node) => {
      let hit = node.path.toLowerCase().includes(needle) && node.value !== null;
      for (const child of node.children.values()) hit = visit(child) || hit;
      if (node.el) {
        node.el.classList.toggle("hit", hit);
        node.el.classList.toggle("miss", !hit);
      }
      return hit;
    };
    visit(root);
  }

  // ------------------------------------------------------------------ chart

  const chartFilters = [];
  const series = new Map();      // topic -> {dataset, row, min, max, unit}
  let chart = null;
  let chartDirty = false;

  function windowMs() {
    return Number($("chart-window").value) * 1000;
  }

  // The time axis starts at the first point, so that a fresh page's few seconds of
  // data fill the chart instead of a sliver at its right edge; it widens as data
  // comes until it spans the chosen window, then slides.
  function visibleSpanMs(now) {
    let first = now;
    for (const entry of series.values()) {
      if (entry.dataset.data.length) first = Math.min(first, entry.dataset.data[0].x);
    }
    return Math.min(windowMs(), Math.max(MIN_SPAN_MS, now - first));
  }

  function createChart() {
    chart = new Chart($("chart"), {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", intersect: false },
        elements: {
          // Dots while a series is short (a lone reading is visible), a plain line after.
          point: { radius: (ctx) => (ctx.dataset.data.length <= 60 ? 2.5 : 0), hitRadius: 6 },
          line: { borderWidth: 2, tension: 0.2 },
        },
        scales: {
          x: {
            type: "linear",
            ticks: { callback: (v) => formatTime(v), maxRotation: 0, autoSkipPadding: 24,
                     includeBounds: false },
            grid: { color: "#eef0f3" },
          },
          y: { grid: { color: "#eef0f3" } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12, usePointStyle: true } },
          tooltip: {
            callbacks: {
              title: (items) => (items.length ? formatTime(items[0].parsed.x) : ""),
            },
          },
        },
      },
    });
  }

  function chartedBy(topic) {
    return chartFilters.some((filter) => matches(filter, topic));
  }

  function addPoint(topic, number, time) {
    let entry = series.get(topic);
    if (!entry) {
      const color = COLORS[series.size % COLORS.length];
      const dataset = { label: topic, data: [], borderColor: color, backgroundColor: color };
      chart.data.datasets.push(dataset);
      const row = document.createElement("tr");
      row.dataset.topic = topic;
      row.innerHTML = '<td><span class="swatch"></span></td><td class="topic"></td>' +
        '<td class="last"></td><td class="min"></td><td class="max"></td><td class="points"></td>';
      row.querySelector(".swatch").style.background = color;
      row.querySelector(".topic").textContent = topic;
      $("series").querySelector("tbody").appendChild(row);
      $("series-empty").hidden = true;
      entry = { dataset, row, min: number.value, max: number.value, unit: number.unit };
      series.set(topic, entry);
    }
    entry.dataset.data.push({ x: time, y: number.value });
    if (entry.dataset.data.length > MAX_POINTS) entry.dataset.data.shift();
    entry.min = Math.min(entry.min, number.value);
    entry.max = Math.max(entry.max, number.value);
    entry.unit = number.unit || entry.unit;
    const unit = entry.unit ? ` ${entry.unit}` : "";
    entry.row.querySelector(".last").textContent = formatNumber(number.value) + unit;
    entry.row.querySelector(".min").textContent = formatNumber(entry.min) + unit;
    entry.row.querySelector(".max").textContent = formatNumber(entry.max) + unit;
    entry.row.querySelector(".points").textContent = String(entry.dataset.data.length);
    chartDirty = true;
  }

  function flushChart() {
    if (!chart) return;
    const now = Date.now();
    const oldest = now - windowMs();
    for (const entry of series.values()) {
      const data = entry.dataset.data;
      let drop = 0;
      while (drop < data.length - 1 && data[drop].x < oldest) drop++;
      if (drop) { data.splice(0, drop); chartDirty = true; }
    }
    if (!chartDirty) return;
    const span = visibleSpanMs(now);
    chart.options.scales.x.min = now - span;
    chart.options.scales.x.max = now;
    chart.options.scales.x.ticks.stepSize = span / 5;
    chart.update("none");
    chartDirty = false;
  }

  function removeSeriesNotCharted() {
    for (const [topic, entry] of series) {
      if (!chartedBy(topic)) {
        chart.data.datasets.splice(chart.data.datasets.indexOf(entry.dataset), 1);
        entry.row.remove();
        series.delete(topic);
      }
    }
    $("series-empty").hidden = series.size > 0;
    chartDirty = true;
  }

  function renderFilterChips() {
    const list = $("chart-filters");
    list.replaceChildren();
    for (const filter of chartFilters) {
      const li = document.createElement("li");
      li.className = "chip";
      li.dataset.filter = filter;
      const label = document.createElement("span");
      label.textContent = filter;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.title = `stop charting ${filter}`;
      remove.addEventListener("click", () => removeChartFilter(filter));
      li.append(label, remove);
      list.appendChild(li);
    }
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(chartFilters));
    } catch {
      // storage unavailable (private mode): the choice lasts for this page only
    }
  }

  function addChartFilter(filter) {
    const problem = filterProblem(filter);
    const error = $("chart-error");
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      return;
    }
    error.hidden = true;
    if (chartFilters.includes(filter)) return;
    chartFilters.push(filter);
    renderFilterChips();
    // Values already seen (retained ones included) start the series at once.
    for (const [topic, value] of latest) {
      if (matches(filter, topic) && !series.has(topic)) {
        const number = numericValue(value.text);
        if (number) addPoint(topic, number, value.time);
      }
    }
    if (client && client.connected && filter.startsWith("$") && !filter.startsWith(SYS)) {
      client.subscribe(filter, { qos: 0 });
    }
  }

  function removeChartFilter(filter) {
    const index = chartFilters.indexOf(filter);
    if (index < 0) return;
    chartFilters.splice(index, 1);
    if (client && client.connected && filter.startsWith("$") && !filter.startsWith(SYS)) {
      client.unsubscribe(filter);
    }
    renderFilterChips();
    removeSeriesNotCharted();
  }

  function initialFilters() {
    const fromUrl = new URLSearchParams(location.search).getAll("chart");
    if (fromUrl.length) return fromUrl;
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
      if (Array.isArray(saved)) return saved.filter((f) => typeof f === "string");
    } catch {
      // ignore a damaged saved value
    }
    return DEFAULT_CHART;
  }

  // ------------------------------------------------------------------ MQTT

  const latest = new Map();   // topic -> {text, time, retain}
  let client = null;

  function setStatus(status, text) {
    const el = $("status");
    el.dataset.status = status;
    el.textContent = text;
  }

  function onMessage(topic, payload, packet) {
    const time = Date.now();
    const text = payloadText(payload);
    const update = { text, time, retain: Boolean(packet.retain) };
    latest.set(topic, update);
    pendingTree.set(topic, update);
    if (topic.startsWith(SYS)) {
      sys.set(topic.slice(SYS.length), text);
      sysDirty = true;
    }
    if (chart && chartedBy(topic)) {
      const number = numericValue(text);
      if (number) addPoint(topic, number, time);
    }
  }

  let sysDirty = false;

  async function websocketPath() {
    try {
      const response = await fetch("/dashboard/config.json", { cache: "no-store" });
      if (response.ok) return (await response.json()).websocket_path || "/mqtt";
    } catch {
      // older broker or a proxy in between: use the documented path
    }
    return "/mqtt";
  }

  async function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${await websocketPath()}`;
    const clientId = `mqttish-dashboard-${Math.random().toString(16).slice(2, 10)}`;
    client = mqtt.connect(url, {
      protocolVersion: 5,
      clientId,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 2000,
      connectTimeout: 5000,
    });
    client.on("connect", () => {
      setStatus("connected", `connected · ${url}`);
      const filters = { "#": { qos: 0 }, "$SYS/broker/#": { qos: 0 } };
      for (const filter of chartFilters) {
        if (filter.startsWith("$") && !filter.startsWith(SYS)) filters[filter] = { qos: 0 };
      }
      client.subscribe(filters, (error) => {
        if (error) {
          setStatus("error", `subscribe failed: ${error.message}`);
        } else {
          body.dataset.state = "live";
        }
      });
    });
    client.on("reconnect", () => setStatus("connecting", "reconnecting…"));
    client.on("offline", () => { body.dataset.state = "offline"; setStatus("offline", "offline"); });
    client.on("error", (error) => setStatus("error", `error: ${error.message}`));
    client.on("message", onMessage);
  }

  // ------------------------------------------------------------------ publish

  function setupPublish() {
    $("publish-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const result = $("publish-result");
      const topic = $("publish-topic").value.trim();
      if (!topic || topic.includes("+") || topic.includes("#")) {
        result.textContent = "a topic name has no wildcards";
        result.className = "error";
        return;
      }
      if (!client || !client.connected) {
        result.textContent = "not connected";
        result.className = "error";
        return;
      }
      const qos = Number($("publish-qos").value);
      const retain = $("publish-retain").checked;
      client.publish(topic, $("publish-payload").value, { qos, retain }, (error) => {
        result.className = error ? "error" : "ok";
        result.textContent = error ? `failed: ${error.message}` :
          `published to ${topic} at ${formatTime(Date.now())}`;
      });
    });
  }

  // ------------------------------------------------------------------ start

  function start() {
    buildCards();
    $("tree").appendChild(rootList);
    createChart();
    for (const filter of initialFilters()) addChartFilter(filter);
    renderFilterChips();
    $("chart-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("chart-filter");
      addChartFilter(input.value.trim());
      if ($("chart-error").hidden) input.value = "";
    });
    $("chart-window").addEventListener("change", () => { chartDirty = true; flushChart(); });
    $("tree-search").addEventListener("input", applySearch);
    setupPublish();
    setInterval(() => {
      flushTree();
      if (sysDirty) { renderCards(); renderBridges(); renderNodes(); sysDirty = false; }
    }, FLUSH_MS);
    setInterval(flushChart, 250);
    connect();
    // For tests and the curious: the dashboard's state, read-only by convention.
    window.mqttishDashboard = { get client() { return client; }, get chart() { return chart; },
                                series, latest, chartFilters };
  }

  if (typeof mqtt === "undefined" || typeof Chart === "undefined") {
    setStatus("error", "MQTT.js or Chart.js did not load (is node_modules installed?)");
    body.dataset.state = "error";
  } else {
    start();
  }
})();
