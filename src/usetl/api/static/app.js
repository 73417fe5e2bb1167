// The usetl dashboard: every number on it comes from the JSON API the CLI uses, read with
// the tenant's bearer token (sessionStorage; sent as the Authorization header).
import { h, render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";
import uPlot from "uplot";

const html = htm.bind(h);
const TOKEN_KEY = "usetl-token";
const REFRESH_MS = 2000;
const PHASES = [  // platform/pool.py: PHASES
  ["queue_ms", "queue", "#9ca3af"], ["dispatch_ms", "dispatch", "#f59e0b"],
  ["start_ms", "template start", "#7c3aed"], ["restore_ms", "restore", "#a855f7"],
  ["fork_ms", "fork", "#ec4899"], ["guest_ms", "guest", "#3b82f6"],
  ["etl_ms", "ETL requests", "#10b981"], ["rollback_ms", "rollback", "#64748b"],
];

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new ApiError(response.status, error.code || "http_error",
                       error.message || `${path}: HTTP ${response.status}`);
  }
  return body;
}

// An API answer, read again every REFRESH_MS; `missing` is what a 404 (an API this server
// does not have) stands for.
function usePolled(path, missing) {
  const [state, setState] = useState({ data: null, error: null });
  useEffect(() => {
    let live = true;
    const load = () => api(path).then(
      (data) => live && setState({ data, error: null }),
      (error) => live && setState(error.status === 404 && missing !== undefined
        ? { data: missing, error: null } : { data: null, error }));
    load();
    const timer = setInterval(load, REFRESH_MS);
    return () => { live = false; clearInterval(timer); };
  }, [path]);
  return state;
}

const ms = (v) => (v === null || v === undefined ? "—" : `${v.toFixed(2)} ms`);
const mib = (b) => (b === null || b === undefined ? "n/a" : `${(b / 1048576).toFixed(1)} MiB`);
const when = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "—");

function Panel({ title, id, wide, state, children }) {
  let body;
  if (state && state.error) body = html`<p class="error">${state.error.message}</p>`;
  else if (state && !state.data) body = html`<p class="empty">loading…</p>`;
  else body = children();
  return html`<section id=${id} class=${wide ? "wide" : ""}><h2>${title}</h2>${body}</section>`;
}

function Versions({ name }) {
  const state = usePolled(`/v1/functions/${encodeURIComponent(name)}`);
  return html`<span data-field="versions">${state.data
    ? state.data.versions.join(", ") : "…"}</span>`;
}

function Functions() {
  const state = usePolled("/v1/functions");
  return html`<${Panel} title="Functions" id="functions" state=${state}>${() => {
    const fns = state.data.functions;
    if (!fns.length) return html`<p class="empty">No functions yet: usetl deploy NAME FILE</p>`;
    return html`<table><tr><th>name</th><th class="num">live version</th><th>handler</th>
      <th>versions</th><th class="num">memory</th><th class="num">timeout</th><th>reuse</th>
      <th>deployed</th></tr>
      ${fns.map((f) => html`<tr data-function=${f.name}><td>${f.name}</td>
        <td class="num" data-field="version">${f.version}</td><td>${f.handler}</td>
        <td><${Versions} name=${f.name} /></td>
        <td class="num">${f.memory_mib} MiB</td><td class="num">${f.timeout_s} s</td>
        <td>${f.reuse}</td><td>${when(f.created)}</td></tr>`)}</table>`;
  }}<//>`;
}

function Pools() {
  const state = usePolled("/v1/pool");
  return html`<${Panel} title="Pools and instances" id="pools" state=${state}>${() => {
    const pool = state.data;
    if (pool.hosts) return html`<p class="empty">A cluster: pools live on its workers (Hosts).</p>`;
    return html`<p>backend <b>${pool.backend}</b>, pools hold <b data-field="pool-memory">
      ${mib(pool.memory_bytes)}</b> of a ${mib(pool.memory_budget_bytes)} budget</p>
      ${pool.functions.length ? html`<table><tr><th>version</th><th class="num">ready</th>
        <th class="num">busy</th><th class="num">children</th>
        <th class="num">children's memory</th><th class="num">queued</th>
        <th class="num">template</th>
        <th>instances (USS of each clone)</th></tr>
        ${pool.functions.map((p) => html`<tr data-pool=${p.function}><td>${p.function}</td>
          <td class="num">${p.ready}</td><td class="num">${p.busy}</td>
          <td class="num">${p.children}</td><td class="num">${mib(p.children_bytes)}</td>
          <td class="num">${p.queued}</td><td class="num">${mib(p.template_bytes)}</td>
          <td>${p.instances.map((i) => html`<div data-instance=${i.id}>${i.id.slice(0, 8)}
            ${" "}${i.state}: <span data-field="uss">${mib(i.memory && i.memory.uss)}</span>
            </div>`)}</td></tr>`)}</table>`
        : html`<p class="empty">No pools: nothing has been deployed or invoked.</p>`}`;
  }}<//>`;
}

function RateChart({ activity }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const xs = activity.per_second.map((_, i) => activity.start + i);
    const data = [xs, activity.per_second];
    if (!plot.current) {
      plot.current = new uPlot({ width: 520, height: 160, legend: { show: false },
        series: [{}, { label: "invocations/s", stroke: "#3b82f6", fill: "#3b82f622" }] },
        data, box.current);
    } else {
      plot.current.setData(data);
    }
  }, [activity]);
  useEffect(() => () => plot.current && plot.current.destroy(), []);
  return html`<div ref=${box}></div>`;
}

function Histogram({ latency }) {
  const top = Math.max(1, ...latency.counts);
  const labels = [...latency.bounds_s.map((b) => (b < 1 ? `${b * 1000}ms` : `${b}s`)), "more"];
  return html`<div class="hist">${latency.counts.map((n, i) => html`<div
      data-bucket=${labels[i]} data-count=${n} title=${`≤ ${labels[i]}: ${n}`}
      style=${`height: ${(100 * n) / top}%`}></div>`)}</div>
    <div class="hist-labels">${labels.map((l) => html`<span>${l}</span>`)}</div>`;
}

function Activity() {
  const state = usePolled("/v1/activity?window=60");
  return html`<${Panel} title="Invocations, last 60 s" id="activity" state=${state}>${() => {
    const a = state.data;
    return html`<p><b data-field="activity-count">${a.invocations}</b> finished
      (${(a.invocations / a.window_s).toFixed(2)}/s), <b>${a.failed}</b> failed</p>
      <${RateChart} activity=${a} /><h2>Latency (duration)</h2><${Histogram} latency=${a.latency} />`;
  }}<//>`;
}

function PhaseBar({ phases }) {
  const total = PHASES.reduce((sum, [k]) => sum + (phases[k] || 0), 0) || 1;
  return html`<div class="phasebar">${PHASES.filter(([k]) => phases[k]).map(([k, name, color]) =>
    html`<span title=${`${name}: ${ms(phases[k])}`}
      style=${`width: ${(100 * phases[k]) / total}%; background: ${color}`}></span>`)}</div>`;
}

function InvocationDetail({ inv }) {
  return html`<div id="invocation-detail"><h2>Invocation ${inv.id}</h2>
    <table>${PHASES.filter(([k]) => k in inv.phases).map(([k, name]) => html`<tr
      data-phase=${k}><td>${name}</td><td class="num">${ms(inv.phases[k])}</td></tr>`)}</table>
    <p>${`guest CPU ${ms(inv.metrics.guest_cpu_ms)}, ${inv.metrics.io_requests ?? 0} ETL `
      + `requests, ${inv.metrics.bytes_in ?? 0} bytes in / ${inv.metrics.bytes_out ?? 0} out`}</p>
    ${inv.error && html`<pre class="error">${inv.error.traceback
      || `${inv.error.type}: ${inv.error.message}`}</pre>`}
    <b>stdout</b><pre data-field="stdout">${inv.stdout}</pre>
    <b>stderr</b><pre data-field="stderr">${inv.stderr}</pre></div>`;
}

function Invocations() {
  const state = usePolled("/v1/invocations?limit=20");
  const [selected, setSelected] = useState(null);
  return html`<${Panel} title="Recent invocations" id="invocations" wide state=${state}>${() => {
    const invs = state.data.invocations;
    if (!invs.length) return html`<p class="empty">No invocations yet.</p>`;
    const chosen = invs.find((i) => i.id === selected);
    return html`<div class="legend">${PHASES.map(([, name, color]) =>
        html`<span><i style=${`background: ${color}`}></i>${name}</span>`)}</div>
      <table><tr><th>finished</th><th>function</th><th>id</th><th>mode</th><th>status</th>
        <th class="num">duration</th><th>where the time went</th></tr>
      ${invs.map((i) => html`<tr data-invocation=${i.id} onClick=${() => setSelected(i.id)}
        class=${`clickable ${i.id === selected ? "selected" : ""}`}>
        <td>${when(i.finished)}</td><td>${i.function} v${i.version}</td>
        <td>${i.id.slice(0, 12)}</td><td>${i.mode}</td>
        <td class=${`status-${i.status}`}>${i.status}</td>
        <td class="num" data-field="duration">${ms(i.metrics.duration_ms)}</td>
        <td><${PhaseBar} phases=${i.phases} /></td></tr>`)}</table>
      ${chosen && html`<${InvocationDetail} inv=${chosen} />`}`;
  }}<//>`;
}

function Schedules() {
  const state = usePolled("/v1/schedules", { schedules: [] });
  return html`<${Panel} title="Schedules" id="schedules" state=${state}>${() => {
    const list = state.data.schedules;
    if (!list.length) return html`<p class="empty">No schedules: usetl schedule add NAME CRON</p>`;
    // What became of the last tick: queued, or refused (its function's queue was full).
    const outcome = (o) => (!o ? "—" : o.refused ? `refused: ${o.refused.code}` : "queued");
    return html`<table><tr><th>function</th><th>cron (UTC)</th><th>next tick</th>
      <th>last tick</th><th>last tick's fate</th><th class="num">refused</th></tr>
      ${list.map((s) => html`<tr data-schedule=${s.id}><td>${s.function}
      </td><td>${s.cron}</td><td>${when(s.next_tick)}</td><td>${when(s.last_tick)}</td>
      <td data-field="outcome">${outcome(s.last_outcome)}</td>
      <td class="num" data-field="refused">${s.refused_ticks}</td></tr>`)}
      </table>`;
  }}<//>`;
}

function Pipelines() {
  const state = usePolled("/v1/pipelines");
  return html`<${Panel} title="Pipelines" id="pipelines" state=${state}>${() => {
    const list = state.data.pipelines;
    if (!list.length) return html`<p class="empty">No pipelines: usetl pipeline deploy NAME F1 F2</p>`;
    const stage = (s) => (typeof s === "string" ? s
      : `${s.function}${s.fan_out ? " (fan-out)" : ""}${s.retries ? ` (retries ${s.retries})` : ""}`);
    return html`<table><tr><th>name</th><th>stages</th><th>deployed</th><th>latest runs</th>
      </tr>${list.map((p) =>
      html`<tr data-pipeline=${p.name}><td>${p.name}</td>
        <td data-field="stages">${p.stages.map(stage).join(" → ")}</td>
        <td>${when(p.created)}</td><td data-field="runs"><${PipelineRuns} name=${p.name} /></td>
        </tr>`)}</table>`;
  }}<//>`;
}

// A pipeline's latest runs (GET /v1/pipelines/NAME/runs): each one's state and time taken.
function PipelineRuns({ name }) {
  const state = usePolled(`/v1/pipelines/${encodeURIComponent(name)}/runs?limit=5`);
  if (state.error) return html`<span class="error">${state.error.message}</span>`;
  if (!state.data) return html`<span class="empty">…</span>`;
  if (!state.data.runs.length) return html`<span class="empty">none yet</span>`;
  return state.data.runs.map((r) => html`<span class=${`run ${r.status}`} data-run=${r.id}
    title=${r.error ? `${r.error.type}: ${r.error.message}` : r.id}>${r.status} ${
    ms(r.finished ? (r.finished - r.created) * 1000 : null)}</span> `);
}

// GET /v1/pool answers the workers' heartbeats (`hosts`) where a gateway of a cluster serves,
// and a single host's own pools otherwise.
function Hosts() {
  const state = usePolled("/v1/pool");
  return html`<${Panel} title="Hosts" id="hosts" state=${state}>${() => {
    const hosts = state.data.hosts;
    if (!hosts) return html`<p class="empty">Single host: this server is not in cluster mode.</p>`;
    if (!hosts.length) return html`<p class="empty">No worker has sent a heartbeat.</p>`;
    return html`<table><tr><th>host</th><th class="num">running</th><th class="num">slots</th>
      <th class="num">free memory</th><th class="num">warm versions</th><th>state</th></tr>
      ${hosts.map((h) => html`<tr data-host=${h.host}><td>${h.host}</td>
        <td class="num">${h.running}</td><td class="num">${h.slots}</td>
        <td class="num">${mib(h.free_memory_bytes)}</td><td class="num">${h.warm.length}</td>
        <td>${h.draining ? "draining" : "up"}</td></tr>`)}</table>`;
  }}<//>`;
}

function SignIn({ onSignIn, error }) {
  const [token, setToken] = useState("");
  const submit = (e) => { e.preventDefault(); onSignIn(token.trim()); };
  return html`<section class="signin"><h2>Sign in to usetl</h2>
    <p>Paste a tenant token (<code>usetl tenant add NAME</code> prints one).</p>
    <form onSubmit=${submit}><input id="token" type="password" autocomplete="off"
      value=${token} onInput=${(e) => setToken(e.target.value)} placeholder="token" />
      <button id="sign-in" type="submit">Sign in</button></form>
    ${error && html`<p id="signin-error" class="error">${error}</p>`}</section>`;
}

function App() {
  const [tenant, setTenant] = useState(null);
  const [error, setError] = useState(null);
  const check = () => api("/v1/whoami").then(setTenant, (e) => {
    sessionStorage.removeItem(TOKEN_KEY);
    setTenant(null);
    setError(e.status === 401 ? `That token was refused: ${e.message}.` : e.message);
  });
  useEffect(() => { if (sessionStorage.getItem(TOKEN_KEY)) check(); }, []);
  const signIn = (token) => { sessionStorage.setItem(TOKEN_KEY, token); setError(null); check(); };
  const signOut = () => { sessionStorage.removeItem(TOKEN_KEY); setTenant(null); };
  if (!tenant) return html`<${SignIn} onSignIn=${signIn} error=${error} />`;
  return html`<header><h1>usetl</h1><span id="tenant">tenant ${tenant.tenant}</span>
      <button onClick=${signOut}>Sign out</button></header>
    <main><${Functions} /><${Pools} /><${Activity} /><${Schedules} /><${Invocations} />
      <${Pipelines} /><${Hosts} /></main>`;
}

render(html`<${App} />`, document.getElementById("app"));
