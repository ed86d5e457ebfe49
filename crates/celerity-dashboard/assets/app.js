/*
 * Celerity dashboard: the single-page app (hand-written ES2020, no framework, no build step).
 * Everything comes from the JSON API described in dashboard-api.md; nothing is templated in.
 *
 * Sections: util · api · ui (toasts, banners, modal) · session · live (EventSource) · charts ·
 * router · views (overview, workers, worker, tasks, task, canvas, queues, dead letters, letter) · boot.
 *
 * Stable hooks for tests (id = #id, tid = [data-testid=...]):
 *   Shell:     #page-title, #live-status (data-state = connecting|live|reconnecting), #sampling-note,
 *              #read-only-badge, #session-user, #logout (button in the POST /logout form),
 *              #nats-banner, #error-banner (#error-banner-text), #toasts (each toast tid=toast,
 *              class ok|error), modal: tid=modal, tid=modal-confirm, tid=modal-cancel,
 *              nav links tid=nav-overview|nav-workers|nav-tasks|nav-queues|nav-dead-letters.
 *              #main has data-view = overview|workers|worker|tasks|task|canvas|queues|dead-letters|letter
 *              and data-ready="1" once the view's first data has been rendered.
 *   Overview:  tid=stat-workers-online, stat-workers-offline, stat-events, stat-<STATE> (e.g. stat-SUCCESS),
 *              #throughput-chart, #workers-table.
 *   Workers:   #workers-table; rows tr[data-testid=worker-row][data-hostname=h][data-online=true|false];
 *              controls (absent when read-only): tid=worker-shutdown, worker-pool-grow,
 *              worker-pool-shrink, worker-add-consumer, worker-cancel-consumer (the × on a queue chip,
 *              data-queue=q). Worker page: #worker-detail, #worker-stats, #worker-registered.
 *   Tasks:     #tasks-filters (inputs #f-name, #f-state, #f-queue, #f-worker, #f-since, #f-until, #f-q;
 *              per-field errors #f-<field>-error; server-side filter error #tasks-filter-error),
 *              #tasks-table; rows tr[data-testid=task-row][data-task-id=id][data-state=S];
 *              #tasks-total, #tasks-prev, #tasks-next, #tasks-new-pill, #tasks-empty.
 *   Task:      #task-detail[data-task-id][data-state], #task-state (pill), #task-name, #task-args,
 *              #task-kwargs, #task-result, #task-error (#task-error-cause items li),
 *              #task-timeline (li[data-type]), #task-progress[data-step][data-total], #task-runtime,
 *              #task-worker, #task-parent, #task-children, #task-canvas-link, #task-trace-link,
 *              controls tid=task-revoke, task-terminate; not found: #task-not-found.
 *   Canvas:    #canvas-graph (svg), nodes g[data-testid=canvas-node][data-task-id][data-state],
 *              collapsed chord header g[data-testid=canvas-chord-counter][data-done][data-size],
 *              chord summaries tid=chord-progress [data-chord-id][data-done][data-size],
 *              #canvas-summary[data-total][data-success], #canvas-not-found.
 *   Queues:    #queues-table rows tr[data-testid=queue-row][data-queue=q], #queues-error (the last reading failed), #queue-charts,
 *              #rate-limits-table rows tr[data-testid=rate-limit-row][data-task=t],
 *              #rate-limit-form (#rl-task, #rl-rate, #rl-scope, #rl-worker, #rl-submit, #rl-error),
 *              #weights-table, #weights-form (#pw-worker, #pw-weights, #pw-submit, #pw-reset).
 *   Dead letters: #dl-filters (#dl-queue, #dl-reason), #dl-table rows tr[data-testid=dl-row][data-seq],
 *              checkbox input[data-testid=dl-check][data-seq], #dl-check-all, #dl-requeue-selected,
 *              #dl-requeue-all, #dl-purge-selected, #dl-purge-all, #dl-total, #dl-empty.
 *   Letter:    #letter-detail[data-seq], #letter-reason, #letter-headers, #letter-body,
 *              #letter-requeue, #letter-purge, #letter-task-link.
 */
'use strict';

/* ───────────────────────────── util ───────────────────────────── */

const STATES = ['PENDING', 'RECEIVED', 'STARTED', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED'];
const FINISHED = new Set(['SUCCESS', 'FAILURE', 'REVOKED']);

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Builds an element: h('a', {href, class, testid, onclick}, ...children). Text is never parsed as HTML. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
/** Same as h() for SVG elements. */
function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

function applyProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'testid') el.setAttribute('data-testid', v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' && 'value' in el && !(el instanceof SVGElement)) el.value = v;
    else if (k === 'checked' || k === 'disabled' || k === 'selected' || k === 'hidden') { el[k] = !!v; if (v) el.setAttribute(k, ''); }
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function appendChildren(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
/** Replaces el's children (arrays flattened, null skipped). */
function fill(el, ...children) { clear(el); appendChildren(el, children); return el; }

const nf = new Intl.NumberFormat(undefined);
function fmtNum(n) { return n === null || n === undefined ? '—' : nf.format(n); }
function fmtRate(r) { return r === null || r === undefined ? '—' : (r >= 100 ? Math.round(r) : r >= 10 ? r.toFixed(1) : r.toFixed(2)) + '/s'; }

function fmtDur(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1) return ms > 0 ? '<1 ms' : '0 ms';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  if (ms < 3600000) return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
  if (ms < 86400000) return Math.floor(ms / 3600000) + ' h ' + Math.round((ms % 3600000) / 60000) + ' min';
  return Math.floor(ms / 86400000) + ' d ' + Math.round((ms % 86400000) / 3600000) + ' h';
}

function relTime(ms, now = Date.now()) {
  if (!ms) return '—';
  const d = now - ms;
  const a = Math.abs(d);
  let t;
  if (a < 5000) return d >= 0 ? 'just now' : 'in a moment';
  if (a < 60000) t = Math.round(a / 1000) + ' s';
  else if (a < 3600000) t = Math.round(a / 60000) + ' min';
  else if (a < 86400000) t = Math.round(a / 3600000) + ' h';
  else t = Math.round(a / 86400000) + ' d';
  return d >= 0 ? t + ' ago' : 'in ' + t;
}

const pad2 = (n) => String(n).padStart(2, '0');
function fmtTime(ms, withMs = false) {
  if (!ms) return '—';
  const d = new Date(ms);
  const today = new Date();
  const time = pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds()) +
    (withMs ? '.' + String(d.getMilliseconds()).padStart(3, '0') : '');
  if (d.toDateString() === today.toDateString()) return time;
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + time;
}
function fmtClock(ms) { const d = new Date(ms); return pad2(d.getHours()) + ':' + pad2(d.getMinutes()); }

/** A <time> element whose relative text the ticker refreshes every few seconds (no API call). */
function relEl(ms) {
  return h('time', { 'data-rel-ms': ms || '', title: ms ? fmtTime(ms, true) : '', datetime: ms ? new Date(ms).toISOString() : null }, relTime(ms));
}
function tickRelTimes() {
  const now = Date.now();
  for (const el of $$('[data-rel-ms]')) {
    const ms = Number(el.getAttribute('data-rel-ms'));
    if (ms) el.textContent = relTime(ms, now);
  }
}

function shortId(id) { return id ? (id.length > 12 ? id.slice(0, 8) + '…' : id) : '—'; }
function statePill(state, extra) {
  const known = STATES.includes(state) || state === 'ONLINE' || state === 'OFFLINE';
  return h('span', Object.assign({ class: 'pill s-' + (known ? state : 'CUSTOM'), 'data-state': state || '' }, extra || {}), state || 'UNKNOWN');
}
function taskLink(id, text) { return id ? h('a', { href: '#/tasks/' + encodeURIComponent(id), class: 'mono', title: id }, text || shortId(id)) : '—'; }
function workerLink(host) { return host ? h('a', { href: '#/workers/' + encodeURIComponent(host) }, host) : '—'; }

/** Pretty-prints JSON text; leaves anything unparseable as it is. */
function prettyJson(text) {
  if (text === null || text === undefined) return null;
  if (typeof text !== 'string') return JSON.stringify(text, null, 2);
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

function globToRegExp(glob) {
  const re = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp('^' + re + '$');
}

function debounce(fn, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

/* ───────────────────────────── api ───────────────────────────── */

class ApiError extends Error {
  constructor(status, code, message, param) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param || null;
  }
}

async function apiFetch(path, options = {}) {
  let res;
  try {
    res = await fetch(path, Object.assign({ credentials: 'same-origin', headers: { Accept: 'application/json' } }, options));
  } catch (e) {
    throw new ApiError(0, 'network', 'The dashboard server cannot be reached. Check that it is running, then reload.');
  }
  if (res.status === 401) {
    location.assign('/login');
    throw new ApiError(401, 'unauthorized', 'Your session has ended: sign in again.');
  }
  let body = null;
  const text = await res.text();
  if (text) {
    try { body = JSON.parse(text); } catch (_) { body = null; }
  }
  if (!res.ok) {
    const err = body && body.error;
    if (err && err.message) throw new ApiError(res.status, err.code || 'error', err.message, err.param);
    throw new ApiError(res.status, 'http_' + res.status, 'The server answered ' + res.status + ' ' + (res.statusText || '') + '.');
  }
  return body;
}

const api = {
  get: (path) => apiFetch(path),
  post: (path, body) => apiFetch(path, {
    method: 'POST',
    headers: { Accept: 'application/json', 'Content-Type': 'application/json', 'X-Celerity-Csrf': session.csrf || '' },
    body: JSON.stringify(body === undefined ? {} : body),
  }),
};

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') u.set(k, v);
  const t = u.toString();
  return t ? '?' + t : '';
}

/* ───────────────────────────── ui ───────────────────────────── */

function toast(message, kind = 'info', ms = 6000) {
  const el = h('div', { class: 'toast ' + kind, testid: 'toast', role: kind === 'error' ? 'alert' : 'status' }, message);
  $('#toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? ms + 4000 : ms);
  return el;
}

function showError(err) {
  const msg = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  if (err && err.status === 401) return;
  $('#error-banner-text').textContent = msg;
  $('#error-banner').hidden = false;
  console.warn('dashboard:', err && err.code, msg);
}
function hideError() { $('#error-banner').hidden = true; }

/** Shows control replies ({replies: [{worker, ok, message, code}]}) as toasts. */
function showReplies(what, res) {
  const replies = (res && res.replies) || [];
  if (!replies.length) { toast(what + ': no worker replied within the timeout.', 'error'); return; }
  for (const r of replies) {
    toast((r.worker ? r.worker + ': ' : '') + (r.message || (r.ok ? 'done' : 'failed')), r.ok ? 'ok' : 'error');
  }
}

/** Runs a control action: POST, toasts for the replies, error toast on failure. */
async function control(what, path, body, onDone) {
  try {
    const res = await api.post(path, body);
    if (res && res.replies) showReplies(what, res);
    if (onDone) onDone(res);
    return res;
  } catch (e) {
    toast(what + ' failed: ' + e.message, 'error');
    return null;
  }
}

/** A modal dialog. Resolves with the confirm callback's value, or null when cancelled. */
function modal({ title, body, confirmText = 'Confirm', danger = false, onConfirm }) {
  return new Promise((resolve) => {
    const root = $('#modal-root');
    const close = (v) => { clear(root); document.removeEventListener('keydown', onKey); resolve(v); };
    const onKey = (e) => { if (e.key === 'Escape') close(null); };
    const confirm = h('button', { class: 'btn ' + (danger ? 'btn-danger solid' : 'btn-primary'), type: 'button', testid: 'modal-confirm',
      onclick: () => close(onConfirm ? onConfirm() : true) }, confirmText);
    const dialog = h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true', testid: 'modal' },
      h('h3', null, title),
      h('div', { class: 'modal-body' }, body),
      h('div', { class: 'modal-actions' },
        h('button', { class: 'btn', type: 'button', testid: 'modal-cancel', onclick: () => close(null) }, 'Cancel'), confirm));
    const back = h('div', { class: 'modal-back', onclick: (e) => { if (e.target === back) close(null); } }, dialog);
    fill(root, back);
    document.addEventListener('keydown', onKey);
    confirm.focus();
  });
}

function emptyState(title, sentence) {
  return h('div', { class: 'empty' }, h('strong', null, title), sentence);
}

function panel(title, right, ...body) {
  return h('section', { class: 'card panel' },
    h('div', { class: 'panel-head' }, h('h2', null, title), right || null), ...body);
}

/* ───────────────────────────── session ───────────────────────────── */

const session = { user: null, auth: false, read_only: false, csrf: '', namespace: '', jaeger_url: null, version: '' };
const canControl = () => !session.read_only;

async function loadSession() {
  Object.assign(session, await api.get('/api/session'));
  document.body.classList.toggle('read-only', !!session.read_only);
  $('#read-only-badge').hidden = !session.read_only;
  const user = $('#session-user');
  user.hidden = !session.user;
  user.textContent = session.user || '';
  $('#logout-form').hidden = !session.auth;
  $('#namespace').textContent = session.namespace ? 'namespace ' + session.namespace : '';
  $('#version').textContent = session.version ? 'v' + session.version : '';
}

/* ───────────────────────────── live (one EventSource per page view) ───────────────────────────── */

const live = { es: null, url: null, overview: null, retryTimer: null, sampleTimer: null, state: 'connecting' };

function setLiveState(state) {
  live.state = state;
  const el = $('#live-status');
  el.setAttribute('data-state', state);
  $('.live-text', el).textContent = state === 'live' ? 'Live' : state === 'reconnecting' ? 'Reconnecting…' : 'Connecting…';
}

/** Opens /api/stream (with ?task= or ?canvas= when the view wants it) unless that stream is already open. */
function ensureStream(extra) {
  const url = '/api/stream' + qs(extra || {});
  if (live.es && live.url === url && live.es.readyState !== EventSource.CLOSED) return;
  closeStream();
  live.url = url;
  const es = new EventSource(url, { withCredentials: true });
  live.es = es;
  setLiveState('connecting');
  es.onopen = () => { if (live.es === es) setLiveState('live'); };
  es.onerror = () => {
    if (live.es !== es) return;
    if (es.readyState === EventSource.CONNECTING) { setLiveState('reconnecting'); return; }
    // CLOSED: the server refused the stream (e.g. 401 after the session ended). Find out why, retry later.
    setLiveState('reconnecting');
    api.get('/api/session').catch(() => {});
    clearTimeout(live.retryTimer);
    live.retryTimer = setTimeout(() => { if (live.es === es) { live.es = null; ensureStream(extra); } }, 3000);
  };
  const on = (name, fn) => es.addEventListener(name, (ev) => {
    if (live.es !== es) return;
    let data;
    try { data = JSON.parse(ev.data); } catch (_) { return; }
    setLiveState('live');
    fn(data);
  });
  on('hello', (d) => { if (d.overview) onOverviewData(d.overview, true); });
  on('overview', (d) => onOverviewData(d, false));
  on('tasks', onTasksData);
  on('workers', (d) => dispatch('onWorkers', d.workers || []));
  on('task', (d) => dispatch('onTask', d.task));
  on('canvas', (d) => dispatch('onCanvas', d.canvas));
}

function closeStream() {
  clearTimeout(live.retryTimer);
  if (live.es) live.es.close();
  live.es = null;
  live.url = null;
}

function onOverviewData(ov, hello) {
  live.overview = ov;
  $('#nats-banner').hidden = !(ov.nats && ov.nats.connected === false);
  dispatch('onOverview', ov, hello);
}

function onTasksData(d) {
  const tasks = d.tasks || [];
  if (d.dropped > 0) {
    const note = $('#sampling-note');
    note.textContent = 'sampled: showing ' + fmtNum(tasks.length) + ' of ' + fmtNum(tasks.length + d.dropped) + ' updates';
    note.title = 'The server sends at most 200 task updates per tick; the rest were left out of this tick.';
    note.hidden = false;
    clearTimeout(live.sampleTimer);
    live.sampleTimer = setTimeout(() => { note.hidden = true; }, 5000);
  }
  dispatch('onTasks', tasks, d.dropped || 0);
}

/* ───────────────────────────── charts (hand-drawn SVG) ───────────────────────────── */

function niceStep(max, ticks) {
  const raw = max / ticks;
  const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
}

/**
 * A line chart: series = [{name, color, points: [[x_ms, y], ...], area}], x is time.
 * Returns a node with the SVG and a legend; hovering shows the values at the nearest time.
 */
function lineChart({ series, xMin, xMax, height = 190, width = 760, yFormat = fmtNum, id = null, empty = 'No data in the last hour yet.' }) {
  const all = series.flatMap((sr) => sr.points);
  if (!all.length) return h('div', { class: 'chart-empty', id }, empty);
  const m = { l: 46, r: 12, t: 10, b: 22 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  xMin = xMin !== undefined ? xMin : Math.min(...all.map((p) => p[0]));
  xMax = xMax !== undefined ? xMax : Math.max(...all.map((p) => p[0]));
  if (xMax <= xMin) xMax = xMin + 1;
  const yMaxRaw = Math.max(1, ...all.map((p) => p[1]));
  const step = niceStep(yMaxRaw, 4);
  const yMax = Math.ceil(yMaxRaw / step) * step;
  const X = (x) => m.l + ((x - xMin) / (xMax - xMin)) * W;
  const Y = (y) => m.t + H - (y / yMax) * H;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', id, role: 'img' });
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    svg.append(s('line', { class: v === 0 ? 'axis' : 'grid', x1: m.l, x2: m.l + W, y1: Y(v), y2: Y(v) }),
      s('text', { x: m.l - 6, y: Y(v) + 3.5, 'text-anchor': 'end' }, yFormat(v)));
  }
  const span = xMax - xMin;
  const tickMs = [60000, 300000, 600000, 900000, 1800000, 3600000, 7200000].find((t) => span / t <= 7) || 14400000;
  for (let t = Math.ceil(xMin / tickMs) * tickMs; t <= xMax; t += tickMs) {
    svg.append(s('text', { x: X(t), y: height - 6, 'text-anchor': 'middle' }, fmtClock(t)));
  }
  for (const sr of series) {
    if (!sr.points.length) continue;
    const pts = sr.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`);
    if (sr.area) {
      svg.append(s('path', { d: `M${X(sr.points[0][0]).toFixed(1)},${Y(0)} L${pts.join(' L')} L${X(sr.points[sr.points.length - 1][0]).toFixed(1)},${Y(0)} Z`,
        fill: sr.color, 'fill-opacity': 0.1, stroke: 'none' }));
    }
    svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: sr.color, 'stroke-width': 1.8, 'stroke-linejoin': 'round',
      'vector-effect': 'non-scaling-stroke', 'data-series': sr.name }));
  }
  // Hover: a guide line and the values at the nearest sample.
  const guide = s('line', { x1: 0, x2: 0, y1: m.t, y2: m.t + H, stroke: '#98a2b3', 'stroke-dasharray': '3 3', visibility: 'hidden' });
  const tip = s('text', { x: 0, y: m.t + 10, visibility: 'hidden', style: 'font-weight:600;fill:#344054' });
  svg.append(guide, tip, s('rect', { x: m.l, y: m.t, width: W, height: H, fill: 'transparent',
    onmousemove: (e) => {
      const box = svg.getBoundingClientRect();
      const x = xMin + ((e.clientX - box.left) / box.width * width - m.l) / W * (xMax - xMin);
      const parts = [];
      let at = null;
      for (const sr of series) {
        let best = null;
        for (const p of sr.points) if (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
        if (best) { at = best[0]; parts.push(sr.name + ' ' + yFormat(best[1])); }
      }
      if (at === null) return;
      guide.setAttribute('x1', X(at)); guide.setAttribute('x2', X(at)); guide.setAttribute('visibility', 'visible');
      tip.textContent = fmtClock(at) + ' · ' + parts.join(' · ');
      const right = X(at) > m.l + W / 2;
      tip.setAttribute('x', right ? X(at) - 6 : X(at) + 6);
      tip.setAttribute('text-anchor', right ? 'end' : 'start');
      tip.setAttribute('visibility', 'visible');
    },
    onmouseleave: () => { guide.setAttribute('visibility', 'hidden'); tip.setAttribute('visibility', 'hidden'); } }));
  const legend = h('div', { class: 'legend' }, series.map((sr) => h('span', null, h('i', { style: 'background:' + sr.color }), sr.name)));
  return h('div', null, svg, legend);
}

const PALETTE = ['#4c8dff', '#1a9f5c', '#e0793a', '#7b4fd6', '#d23f3f', '#1b9bb0', '#c98200', '#8a94a6'];

/* ───────────────────────────── router ───────────────────────────── */

let current = { name: null, handlers: {}, token: 0 };

function dispatch(name, ...args) {
  const fn = current.handlers[name];
  if (fn) {
    try { fn(...args); } catch (e) { console.error(e); }
  }
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const qi = raw.indexOf('?');
  const path = qi >= 0 ? raw.slice(0, qi) : raw;
  const params = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
  const parts = path.split('/').filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch (_) { return p; } });
  return { parts, params };
}

const ROUTES = [
  { match: (p) => p.length === 0, view: 'overview', nav: 'overview', fn: () => viewOverview },
  { match: (p) => p[0] === 'workers' && p.length === 1, view: 'workers', nav: 'workers', fn: () => viewWorkers },
  { match: (p) => p[0] === 'workers' && p.length === 2, view: 'worker', nav: 'workers', fn: () => viewWorker },
  { match: (p) => p[0] === 'tasks' && p.length === 1, view: 'tasks', nav: 'tasks', fn: () => viewTasks },
  { match: (p) => p[0] === 'tasks' && p.length === 2, view: 'task', nav: 'tasks', fn: () => viewTask },
  { match: (p) => p[0] === 'canvas' && p.length === 2, view: 'canvas', nav: 'tasks', fn: () => viewCanvas },
  { match: (p) => p[0] === 'queues' && p.length === 1, view: 'queues', nav: 'queues', fn: () => viewQueues },
  { match: (p) => p[0] === 'dead-letters' && p.length === 1, view: 'dead-letters', nav: 'dead-letters', fn: () => viewDeadLetters },
  { match: (p) => p[0] === 'dead-letters' && p.length === 2, view: 'letter', nav: 'dead-letters', fn: () => viewLetter },
];

function setTitle(t) {
  $('#page-title').textContent = t;
  document.title = t + ' · Celerity';
}

function route() {
  const { parts, params } = parseHash();
  const r = ROUTES.find((x) => x.match(parts));
  if (current.handlers.dispose) { try { current.handlers.dispose(); } catch (_) { /* ignore */ } }
  hideError();
  const main = clear($('#main'));
  main.removeAttribute('data-ready');
  for (const a of $$('.nav a')) a.classList.toggle('active', !!r && a.getAttribute('data-nav') === r.nav);
  const token = current.token + 1;
  if (!r) {
    current = { name: 'not-found', handlers: {}, token };
    main.setAttribute('data-view', 'not-found');
    setTitle('Not found');
    main.append(h('div', { class: 'not-found' }, h('h2', null, 'There is no page here'),
      h('p', { class: 'muted' }, 'The address ', h('code', null, location.hash), ' is not a dashboard page. Pick one from the sidebar.')));
    ensureStream();
    return;
  }
  main.setAttribute('data-view', r.view);
  const ctx = {
    main, parts, params, token,
    alive: () => current.token === token,
    ready: () => { if (current.token === token) main.setAttribute('data-ready', '1'); },
  };
  current = { name: r.view, handlers: {}, token };
  current.handlers = r.fn()(ctx) || {};
  if (live.overview && current.handlers.onOverview) dispatch('onOverview', live.overview, true);
}

/* ───────────────────────────── views: overview ───────────────────────────── */

function viewOverview(ctx) {
  setTitle('Overview');
  ensureStream();
  const stats = h('div', { class: 'cards', id: 'overview-stats' });
  const historyNote = h('span', { class: 'muted', id: 'history-note' });
  const chartBox = h('div', { class: 'panel-body', id: 'throughput-box' }, h('div', { class: 'chart-empty' }, 'Loading…'));
  const workersBox = h('div', { class: 'table-wrap short' });
  ctx.main.append(stats,
    panel('Throughput · tasks finished per 10 s, last hour', historyNote, chartBox),
    panel('Workers', h('a', { href: '#/workers' }, 'Manage workers →'), workersBox));

  let throughput = null; // {interval_ms, points: Map at_ms -> {succeeded, failed, sent}}
  const counted = new Set();
  let workers = new Map();

  function renderStats(ov) {
    const t = ov.tasks || { by_state: {} };
    const card = (label, value, sub, testid, cls) => h('div', { class: 'card stat ' + (cls || ''), testid },
      h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value), sub ? h('div', { class: 'stat-sub' }, sub) : null);
    const by = t.by_state || {};
    fill(stats, 
      card('Workers online', fmtNum(ov.workers ? ov.workers.online : 0), fmtNum(ov.workers ? ov.workers.offline : 0) + ' offline', 'stat-workers-online'),
      card('Events / s', (ov.events_per_s || 0).toFixed(1), ov.sampling && ov.sampling.active ? (ov.sampling.note || 'sampling') : 'from the event stream', 'stat-events'),
      card('Tasks in store', fmtNum(t.stored), 'of at most ' + fmtNum(t.max), 'stat-stored'),
      ...['STARTED', 'SUCCESS', 'FAILURE', 'RETRY'].map((st) =>
        card(st.charAt(0) + st.slice(1).toLowerCase(), fmtNum(by[st] || 0), null, 'stat-' + st)),
    );
    // A hidden-by-default offline card for tests and screen readers.
    stats.append(h('span', { testid: 'stat-workers-offline', hidden: true }, String(ov.workers ? ov.workers.offline : 0)));
    const hist = ov.history || {};
    historyNote.textContent = hist.loading ? 'Replaying history… ' + fmtNum(hist.replayed) + ' events' :
      hist.since_ms ? 'history since ' + fmtTime(hist.since_ms) : '';
  }

  function renderChart() {
    if (!throughput) return;
    const now = Date.now();
    const from = now - 3600000;
    const pts = Array.from(throughput.points.entries()).filter(([at]) => at >= from).sort((a, b) => a[0] - b[0]);
    const chart = lineChart({
      id: 'throughput-chart', xMin: from, xMax: now,
      series: [
        { name: 'succeeded', color: '#1a9f5c', area: true, points: pts.map(([at, p]) => [at, p.succeeded || 0]) },
        { name: 'failed', color: '#d23f3f', points: pts.map(([at, p]) => [at, p.failed || 0]) },
      ],
      empty: 'No task has finished in the last hour.',
    });
    fill(chartBox, chart);
  }

  function renderWorkers() {
    const list = Array.from(workers.values());
    fill(workersBox, list.length ? workersTable(list, { controls: false }) :
      emptyState('No workers yet', 'Start one with `celerity worker` (or `celerity dev` for a demo); it appears here on its first heartbeat.'));
  }

  (async () => {
    try {
      const [ov, ws] = await Promise.all([api.get('/api/overview'), api.get('/api/workers')]);
      if (!ctx.alive()) return;
      onOverviewData(ov, true);
      const tp = ov.throughput || { interval_ms: 10000, points: [] };
      throughput = { interval_ms: tp.interval_ms || 10000, points: new Map(tp.points.map((p) => [p.at_ms, Object.assign({}, p)])) };
      renderChart();
      workers = new Map(ws.workers.map((w) => [w.hostname, w]));
      renderWorkers();
      ctx.ready();
    } catch (e) { if (ctx.alive()) showError(e); }
  })();

  const redrawChart = debounce(renderChart, 1000);
  return {
    onOverview: (ov) => renderStats(ov),
    onWorkers: (ws) => { for (const w of ws) workers.set(w.hostname, w); renderWorkers(); },
    onTasks: (tasks) => {
      if (!throughput) return;
      // The server sends the throughput history once; live finishes are bucketed here from `tasks` events.
      let changed = false;
      for (const t of tasks) {
        if (!t.ended_ms || counted.has(t.id) || (t.state !== 'SUCCESS' && t.state !== 'FAILURE')) continue;
        counted.add(t.id);
        if (counted.size > 100000) counted.clear();
        const at = Math.floor(t.ended_ms / throughput.interval_ms) * throughput.interval_ms;
        const last = Math.max(0, ...throughput.points.keys());
        if (at < last) continue; // already accounted for in the server's history
        const p = throughput.points.get(at) || { at_ms: at, succeeded: 0, failed: 0, sent: 0 };
        if (t.state === 'SUCCESS') p.succeeded += 1; else p.failed += 1;
        throughput.points.set(at, p);
        changed = true;
      }
      if (changed) redrawChart();
    },
  };
}

/* ───────────────────────────── views: workers ───────────────────────────── */

function fmtLoad(load) { return Array.isArray(load) ? load.map((x) => Number(x).toFixed(2)).join('  ') : '—'; }

function poolButtons(w, after) {
  const base = '/api/workers/' + encodeURIComponent(w.hostname);
  return h('span', { class: 'btn-group control', title: 'Pool size' },
    h('button', { class: 'btn btn-sm', type: 'button', testid: 'worker-pool-shrink', title: 'Shrink the pool by one',
      onclick: () => control('Pool shrink', base + '/pool-shrink', { n: 1 }, after) }, '−'),
    h('button', { class: 'btn btn-sm', type: 'button', testid: 'worker-pool-grow', title: 'Grow the pool by one',
      onclick: () => control('Pool grow', base + '/pool-grow', { n: 1 }, after) }, '+'));
}

function workerControls(w, refresh, { pool = true } = {}) {
  const host = w.hostname;
  const base = '/api/workers/' + encodeURIComponent(host);
  const after = () => { if (refresh) refresh(); };
  return h('div', { class: 'btn-group control' },
    pool ? poolButtons(w, after) : null,
    h('button', { class: 'btn btn-sm', type: 'button', testid: 'worker-add-consumer', title: 'Start consuming from a queue',
      onclick: () => addConsumerDialog(host, after) }, '+ queue'),
    h('button', { class: 'btn btn-sm btn-danger', type: 'button', testid: 'worker-shutdown', disabled: !w.online,
      onclick: () => shutdownDialog(host, after) }, 'Shutdown'));
}

async function shutdownDialog(host, after) {
  const warm = h('input', { type: 'radio', name: 'shutdown-mode', value: 'warm', checked: true, id: 'shutdown-warm' });
  const cold = h('input', { type: 'radio', name: 'shutdown-mode', value: 'cold', id: 'shutdown-cold' });
  const ok = await modal({
    title: 'Shut down ' + host + '?', confirmText: 'Shut down', danger: true,
    body: [
      h('label', { class: 'radio' }, warm, h('span', null, h('strong', null, 'Warm'), ' — stop taking tasks, finish the running ones, then exit.')),
      h('label', { class: 'radio' }, cold, h('span', null, h('strong', null, 'Cold'), ' — exit now; running tasks are redelivered to another worker.')),
    ],
    onConfirm: () => ({ cold: cold.checked }),
  });
  if (ok) control('Shutdown', '/api/workers/' + encodeURIComponent(host) + '/shutdown', { cold: ok.cold }, after);
}

async function addConsumerDialog(host, after) {
  const input = h('input', { id: 'add-consumer-queue', placeholder: 'queue name', style: 'width:100%', autocomplete: 'off' });
  const ok = await modal({
    title: 'Consume another queue on ' + host, confirmText: 'Add consumer',
    body: [h('div', { class: 'field' }, h('label', { for: 'add-consumer-queue' }, 'Queue'), input)],
    onConfirm: () => input.value.trim() || null,
  });
  if (ok) control('Add consumer', '/api/workers/' + encodeURIComponent(host) + '/add-consumer', { queue: ok }, after);
}

async function cancelConsumer(host, queue, after) {
  const ok = await modal({
    title: 'Stop consuming ' + queue + '?', confirmText: 'Cancel consumer', danger: true,
    body: [h('p', null, host + ' stops taking new tasks from ', h('code', null, queue), '. Tasks already running finish.')],
  });
  if (ok) control('Cancel consumer', '/api/workers/' + encodeURIComponent(host) + '/cancel-consumer', { queue }, after);
}

function queueChips(w, controls, after) {
  return (w.queues || []).map((q) => h('span', { class: 'chip' }, q,
    controls && w.online ? h('button', { type: 'button', class: 'control', testid: 'worker-cancel-consumer', 'data-queue': q,
      title: 'Stop consuming ' + q, onclick: () => cancelConsumer(w.hostname, q, after) }, '×') : null));
}

function workersTable(list, { controls, refresh }) {
  const withControls = controls && canControl();
  const sorted = list.slice().sort((a, b) => (b.online - a.online) || a.hostname.localeCompare(b.hostname));
  return h('table', { id: 'workers-table' },
    h('thead', null, h('tr', null, h('th', null, 'Status'), h('th', null, 'Hostname'), h('th', null, 'Queues'),
      h('th', { class: 'num' }, 'Pool'), h('th', { class: 'num' }, 'Active'), h('th', { class: 'num' }, 'Processed'),
      h('th', { class: 'num' }, 'Load'), h('th', null, 'Heartbeat'), withControls ? h('th', null, 'Controls') : null)),
    h('tbody', null, sorted.map((w) => h('tr', { testid: 'worker-row', 'data-hostname': w.hostname, 'data-online': String(!!w.online) },
      h('td', null, statePill(w.online ? 'ONLINE' : 'OFFLINE')),
      h('td', null, workerLink(w.hostname), w.software ? h('div', { class: 'muted', style: 'font-size:12px' }, w.software + (w.pid ? ' · pid ' + w.pid : '')) : null),
      h('td', { class: 'queues' }, queueChips(w, withControls, refresh)),
      h('td', { class: 'num' }, withControls && w.online ? h('span', { class: 'btn-group' }, fmtNum(w.concurrency), poolButtons(w, refresh)) : fmtNum(w.concurrency)),
      h('td', { class: 'num' }, fmtNum(w.active), w.reserved ? h('span', { class: 'muted' }, ' +' + fmtNum(w.reserved)) : null),
      h('td', { class: 'num' }, fmtNum(w.processed)),
      h('td', { class: 'num mono' }, fmtLoad(w.load)),
      h('td', null, relEl(w.last_heartbeat_ms)),
      withControls ? h('td', null, workerControls(w, refresh, { pool: false })) : null))));
}

function viewWorkers(ctx) {
  setTitle('Workers');
  ensureStream();
  const box = h('div', { class: 'table-wrap' }, h('div', { class: 'empty' }, 'Loading…'));
  const count = h('span', { class: 'muted', id: 'workers-count' });
  ctx.main.append(panel('Workers', count, box));
  let workers = new Map();
  function render() {
    const list = Array.from(workers.values());
    const online = list.filter((w) => w.online).length;
    count.textContent = online + ' online · ' + (list.length - online) + ' offline';
    fill(box, list.length ? workersTable(list, { controls: true, refresh: null }) :
      emptyState('No workers yet', 'Start one with `celerity worker`; it shows up here on its first heartbeat, within a few seconds.'));
  }
  (async () => {
    try {
      const res = await api.get('/api/workers');
      if (!ctx.alive()) return;
      workers = new Map(res.workers.map((w) => [w.hostname, w]));
      render();
      ctx.ready();
    } catch (e) { if (ctx.alive()) showError(e); }
  })();
  return { onWorkers: (ws) => { for (const w of ws) workers.set(w.hostname, w); if (ctx.main.hasAttribute('data-ready') && !$('#modal-root').firstChild) render(); } };
}

function viewWorker(ctx) {
  const host = ctx.parts[1];
  setTitle('Worker ' + host);
  ensureStream();
  const root = h('div', { id: 'worker-detail', 'data-hostname': host }, h('div', { class: 'empty' }, 'Loading…'));
  ctx.main.append(root);
  let w = null;
  async function load() {
    try {
      w = await api.get('/api/workers/' + encodeURIComponent(host));
      if (!ctx.alive()) return;
      render();
      ctx.ready();
    } catch (e) {
      if (!ctx.alive()) return;
      if (e.status === 404) {
        fill(root, h('div', { class: 'not-found', id: 'worker-not-found' }, h('h2', null, 'No worker named ' + host),
          h('p', { class: 'muted' }, 'No heartbeat from a worker with this hostname has been seen. ', h('a', { href: '#/workers' }, 'See all workers.'))));
        ctx.ready();
      } else showError(e);
    }
  }
  function render() {
    const controls = canControl() ? workerControls(w, load) : null;
    fill(root, 
      h('div', { class: 'task-head' }, h('h2', null, w.hostname), statePill(w.online ? 'ONLINE' : 'OFFLINE'),
        h('span', { class: 'actions' }, controls)),
      h('div', { class: 'cards' },
        ...[['Concurrency', fmtNum(w.concurrency)], ['Active', fmtNum(w.active)], ['Reserved', fmtNum(w.reserved)],
          ['Processed', fmtNum(w.processed)], ['Load 1/5/15', fmtLoad(w.load)]].map(([l, v]) =>
          h('div', { class: 'card stat' }, h('div', { class: 'stat-label' }, l), h('div', { class: 'stat-value' }, v)))),
      h('div', { class: 'grid-2' },
        panel('Details', null, h('div', { class: 'panel-body' }, h('dl', { class: 'kv' },
          h('dt', null, 'Queues'), h('dd', null, queueChips(w, canControl(), load).length ? queueChips(w, canControl(), load) : '—'),
          h('dt', null, 'Software'), h('dd', null, w.software || '—'),
          h('dt', null, 'PID'), h('dd', null, w.pid || '—'),
          h('dt', null, 'Last heartbeat'), h('dd', null, relEl(w.last_heartbeat_ms)),
          h('dt', null, 'Online since'), h('dd', null, w.online_since_ms ? fmtTime(w.online_since_ms) : '—'),
          h('dt', null, 'HTTP'), h('dd', null, w.http || '—'),
          h('dt', null, 'Tasks'), h('dd', null, h('a', { href: '#/tasks?worker=' + encodeURIComponent(w.hostname) }, 'Tasks run by this worker →'))))),
        panel('Registered tasks', null, h('div', { class: 'panel-body', id: 'worker-registered' },
          w.registered ? (w.registered.length ? w.registered.map((t) => h('span', { class: 'chip' }, t)) : 'None.') :
            h('span', { class: 'muted' }, 'The worker did not answer within 1 s (it may be offline or busy).')))),
      panel('Stats', null, h('div', { class: 'panel-body' }, w.stats ?
        h('pre', { class: 'code', id: 'worker-stats' }, JSON.stringify(w.stats, null, 2)) :
        h('span', { class: 'muted', id: 'worker-stats' }, 'No stats: the worker did not answer within 1 s.'))));
  }
  load();
  return {
    onWorkers: (ws) => {
      const n = ws.find((x) => x.hostname === host);
      if (n && w && !$('#modal-root').firstChild) { w = Object.assign(w, n); render(); }
    },
  };
}

/* ───────────────────────────── views: tasks ───────────────────────────── */

const TASK_FILTERS = ['name', 'state', 'queue', 'worker', 'since', 'until', 'q'];
const PER_PAGE = 50;

function toLocalInput(ms) {
  if (!ms) return '';
  const d = new Date(Number(ms));
  if (isNaN(d)) return '';
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + 'T' + pad2(d.getHours()) + ':' + pad2(d.getMinutes());
}

/** Validates task filters in the page before asking the server; returns {field: message}. */
function validateTaskFilters(f) {
  const errors = {};
  if (f.state) {
    const bad = f.state.split(',').map((x) => x.trim()).filter((x) => x && !STATES.includes(x));
    if (bad.length) errors.state = 'Unknown state ' + bad.join(', ') + '. Use one of ' + STATES.join(', ') + '.';
  }
  for (const k of ['since', 'until']) {
    if (f[k] && !/^\d+$/.test(f[k])) errors[k] = 'Not a time: pick a date and time.';
  }
  if (!errors.since && !errors.until && f.since && f.until && Number(f.since) > Number(f.until)) errors.until = '"Until" is before "since".';
  if (f.q && !/^[A-Za-z0-9._:-]+$/.test(f.q)) errors.q = 'A task id has only letters, digits, "-", "_", "." and ":".';
  return errors;
}

/** The same filtering the server does, applied to pushed summaries (page 1 only). */
function taskMatches(t, f) {
  if (f.name && !globToRegExp(f.name).test(t.name || '')) return false;
  if (f.state && !f.state.split(',').map((x) => x.trim()).includes(t.state)) return false;
  if (f.queue && t.queue !== f.queue) return false;
  if (f.worker && t.worker !== f.worker) return false;
  if (f.q && !(t.id || '').startsWith(f.q)) return false;
  const at = t.sent_ms || t.received_ms || t.updated_ms;
  if (f.since && !(at >= Number(f.since))) return false;
  if (f.until && !(at <= Number(f.until))) return false;
  return true;
}

function taskRow(t, flash) {
  return h('tr', { testid: 'task-row', 'data-task-id': t.id, 'data-state': t.state, class: flash ? 'flash' : null },
    h('td', null, statePill(t.state)),
    h('td', { class: 'ellipsis' }, h('a', { href: '#/tasks/' + encodeURIComponent(t.id), title: t.name }, t.name || '—')),
    h('td', null, taskLink(t.id)),
    h('td', null, t.queue || '—'),
    h('td', { class: 'ellipsis' }, t.worker ? workerLink(t.worker) : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'num' }, fmtTime(t.sent_ms || t.received_ms)),
    h('td', { class: 'num' }, fmtDur(t.runtime_ms)),
    h('td', { class: 'num' }, t.retries ? fmtNum(t.retries) : h('span', { class: 'muted' }, '0')),
    h('td', { class: 'num' }, relEl(t.updated_ms)));
}

function viewTasks(ctx) {
  setTitle('Tasks');
  ensureStream();
  const f = {};
  for (const k of TASK_FILTERS) f[k] = (ctx.params.get(k) || '').trim();
  const page = Math.max(1, parseInt(ctx.params.get('page') || '1', 10) || 1);

  const field = (key, label, input) => h('div', { class: 'field' }, h('label', { for: 'f-' + key }, label), input,
    h('div', { class: 'field-error', id: 'f-' + key + '-error', hidden: true }));
  const stateSel = h('select', { id: 'f-state', name: 'state' }, h('option', { value: '' }, 'Any state'),
    STATES.map((st) => h('option', { value: st }, st)), f.state && !STATES.includes(f.state) ? h('option', { value: f.state }, f.state) : null);
  stateSel.value = f.state;
  const inputs = {
    name: h('input', { id: 'f-name', name: 'name', placeholder: 'tasks.*', value: f.name, size: 16 }),
    state: stateSel,
    queue: h('input', { id: 'f-queue', name: 'queue', placeholder: 'any', value: f.queue, size: 10, list: 'dl-queues' }),
    worker: h('input', { id: 'f-worker', name: 'worker', placeholder: 'any', value: f.worker, size: 14, list: 'dl-workers' }),
    since: h('input', { id: 'f-since', name: 'since', type: 'datetime-local', value: toLocalInput(f.since) }),
    until: h('input', { id: 'f-until', name: 'until', type: 'datetime-local', value: toLocalInput(f.until) }),
    q: h('input', { id: 'f-q', name: 'q', placeholder: 'task id or prefix', value: f.q, size: 20, class: 'mono' }),
  };
  const range = h('select', { id: 'f-range', title: 'Quick time range', onchange: () => {
    const v = Number(range.value);
    if (v) { inputs.since.value = toLocalInput(Date.now() - v); inputs.until.value = ''; }
  } }, h('option', { value: '' }, 'Range…'), [['Last 5 min', 300000], ['Last 15 min', 900000], ['Last hour', 3600000], ['Last 24 h', 86400000]]
    .map(([l, v]) => h('option', { value: v }, l)));
  const form = h('form', { class: 'filters', id: 'tasks-filters', onsubmit: (e) => { e.preventDefault(); submit(); } },
    field('q', 'Task id', inputs.q), field('name', 'Name', inputs.name), field('state', 'State', inputs.state),
    field('queue', 'Queue', inputs.queue), field('worker', 'Worker', inputs.worker),
    field('since', 'Since', inputs.since), field('until', 'Until', inputs.until),
    h('div', { class: 'field' }, h('label', null, '\u00a0'), range),
    h('div', { class: 'btn-group' }, h('button', { class: 'btn btn-primary', type: 'submit', id: 'tasks-apply' }, 'Apply'),
      h('button', { class: 'btn btn-ghost', type: 'button', id: 'tasks-clear', onclick: () => { location.hash = '#/tasks'; } }, 'Clear')),
    h('datalist', { id: 'dl-queues' }), h('datalist', { id: 'dl-workers' }));
  const filterError = h('div', { class: 'filter-error', id: 'tasks-filter-error', role: 'alert', hidden: true });
  const newPill = h('button', { class: 'new-pill', id: 'tasks-new-pill', type: 'button', hidden: true, onclick: () => go(1) });
  const total = h('span', { class: 'muted', id: 'tasks-total' }, '');
  const tbody = h('tbody');
  const table = h('table', { id: 'tasks-table' }, h('thead', null, h('tr', null, h('th', null, 'State'), h('th', null, 'Name'), h('th', null, 'ID'),
    h('th', null, 'Queue'), h('th', null, 'Worker'), h('th', { class: 'num' }, 'Sent'), h('th', { class: 'num' }, 'Runtime'),
    h('th', { class: 'num' }, 'Retries'), h('th', { class: 'num' }, 'Updated'))), tbody);
  const emptyBox = h('div', { id: 'tasks-empty', hidden: true });
  const prev = h('button', { class: 'btn btn-sm', id: 'tasks-prev', type: 'button', disabled: page <= 1, onclick: () => go(page - 1) }, '← Newer');
  const next = h('button', { class: 'btn btn-sm', id: 'tasks-next', type: 'button', disabled: true, onclick: () => go(page + 1) }, 'Older →');
  ctx.main.append(h('section', { class: 'card panel' }, form, filterError,
    h('div', { class: 'panel-head' }, h('h2', null, 'Tasks ', total), newPill),
    h('div', { class: 'table-wrap' }, table, emptyBox),
    h('div', { class: 'toolbar' }, h('span', { class: 'muted', id: 'tasks-range' }), h('span', { class: 'btn-group' }, prev, next))));

  function readForm() {
    const out = {};
    for (const k of TASK_FILTERS) {
      let v = inputs[k].value.trim();
      if ((k === 'since' || k === 'until') && v) { const ms = new Date(v).getTime(); v = isNaN(ms) ? 'invalid' : String(ms); }
      out[k] = v;
    }
    return out;
  }
  function showFieldErrors(errors) {
    for (const k of TASK_FILTERS) {
      const el = $('#f-' + k + '-error', form);
      el.hidden = !errors[k];
      el.textContent = errors[k] || '';
      inputs[k].classList.toggle('invalid', !!errors[k]);
    }
  }
  function submit() {
    const nf2 = readForm();
    const errors = validateTaskFilters(nf2);
    showFieldErrors(errors);
    if (Object.keys(errors).length) return;
    location.hash = '#/tasks' + qs(nf2);
  }
  function go(p) { location.hash = '#/tasks' + qs(Object.assign({}, f, { page: p > 1 ? p : '' })); }

  let rows = []; // current page's summaries, newest first
  let totalN = 0;
  const unseen = new Set();
  function renderRows(flashIds) {
    fill(tbody, ...rows.map((t) => taskRow(t, flashIds && flashIds.has(t.id))));
    const filtered = TASK_FILTERS.some((k) => f[k]);
    emptyBox.hidden = rows.length > 0;
    fill(emptyBox, filtered ?
      emptyState('No task matches these filters', 'Widen the time range or clear a filter; new matching tasks appear here as they arrive.') :
      emptyState('No tasks yet', 'Tasks appear here live as soon as a producer sends one (try `celerity dev` for demo tasks).'));
    total.textContent = '· ' + fmtNum(totalN);
    const first = (page - 1) * PER_PAGE;
    $('#tasks-range').textContent = rows.length ? 'Showing ' + fmtNum(first + 1) + '–' + fmtNum(first + rows.length) + ' of ' + fmtNum(totalN) : '';
    next.disabled = first + rows.length >= totalN;
  }

  const errors = validateTaskFilters(f);
  if (f.since === 'invalid' || f.until === 'invalid') errors[f.since === 'invalid' ? 'since' : 'until'] = 'Not a time: pick a date and time.';
  showFieldErrors(errors);
  (async () => {
    // Suggestions for the queue and worker fields.
    api.get('/api/workers').then((res) => {
      if (!ctx.alive()) return;
      const qset = new Set();
      for (const w of res.workers) for (const q of w.queues || []) qset.add(q);
      $('#dl-queues', form).append(...Array.from(qset).sort().map((q) => h('option', { value: q })));
      $('#dl-workers', form).append(...res.workers.map((w) => h('option', { value: w.hostname })));
    }).catch(() => {});
    if (Object.keys(errors).length) { rows = []; renderRows(); ctx.ready(); return; }
    try {
      const res = await api.get('/api/tasks' + qs(Object.assign({}, f, { page, per_page: PER_PAGE })));
      if (!ctx.alive()) return;
      rows = res.tasks || [];
      totalN = res.total || 0;
      renderRows();
    } catch (e) {
      if (!ctx.alive()) return;
      if (e.code === 'invalid_filter' || e.code === 'bad_request') {
        const named = /^filter (\w+):/.exec(e.message);
        const param = e.param || (named && TASK_FILTERS.includes(named[1]) ? named[1] : null) || TASK_FILTERS.find((k) => new RegExp('[`\'"]' + k + '[`\'"]|\\b' + k + '\\b').test(e.message));
        if (param) showFieldErrors({ [param]: e.message });
        else { filterError.textContent = e.message; filterError.hidden = false; }
        rows = []; renderRows();
      } else showError(e);
    }
    ctx.ready();
  })();

  return {
    onTasks: (tasks) => {
      if (!ctx.main.hasAttribute('data-ready') || Object.keys(errors).length) return;
      const matching = tasks.filter((t) => taskMatches(t, f));
      if (page !== 1) {
        const have = new Set(rows.map((r) => r.id));
        for (const t of matching) if (!have.has(t.id)) unseen.add(t.id);
        for (const t of tasks) { const i = rows.findIndex((r) => r.id === t.id); if (i >= 0) rows[i] = t; }
        newPill.hidden = unseen.size === 0;
        newPill.textContent = fmtNum(unseen.size) + ' new · show';
        if (tasks.some((t) => have.has(t.id))) renderRows();
        return;
      }
      const byId = new Map(rows.map((r) => [r.id, r]));
      const flash = new Set();
      for (const t of tasks) {
        const had = byId.has(t.id);
        if (taskMatches(t, f)) {
          if (!had) { totalN += 1; flash.add(t.id); }
          byId.set(t.id, t);
        } else if (had) { byId.delete(t.id); totalN = Math.max(0, totalN - 1); }
      }
      rows = Array.from(byId.values()).sort((a, b) => (b.updated_ms || 0) - (a.updated_ms || 0)).slice(0, PER_PAGE);
      renderRows(flash);
    },
  };
}

/* ───────────────────────────── views: task ───────────────────────────── */

const TIMELINE_LABEL = {
  'task-sent': 'Sent', 'task-received': 'Received', 'task-started': 'Started', 'task-succeeded': 'Succeeded',
  'task-failed': 'Failed', 'task-retried': 'Retry', 'task-revoked': 'Revoked', 'task-rejected': 'Rejected',
};

function progressOf(meta) {
  if (!meta || typeof meta !== 'object') return null;
  const step = Number(meta.step), totalN = Number(meta.total);
  if (!isFinite(step) || !isFinite(totalN) || totalN <= 0) return null;
  return { step, total: totalN, pct: Math.max(0, Math.min(100, (step / totalN) * 100)) };
}

function causeText(c) {
  if (c === null || c === undefined) return '';
  if (typeof c === 'string') return c;
  if (c.type || c.message) return (c.type ? c.type + ': ' : '') + (c.message || '');
  return JSON.stringify(c);
}

function errorBlock(err) {
  const cause = Array.isArray(err.cause) ? err.cause : err.cause ? [err.cause] : [];
  return h('div', { class: 'error-box', id: 'task-error' },
    h('div', null, h('span', { class: 'error-type' }, err.type || 'Error'), err.message ? ': ' + err.message : ''),
    cause.length ? h('div', { style: 'margin-top:10px' }, h('div', { class: 'muted', style: 'font-size:12px;font-weight:600' }, 'Caused by'),
      h('ol', { class: 'cause-list', id: 'task-error-cause' }, cause.map((c) => h('li', null, causeText(c))))) : null);
}

function notFound(id, title, sentence) {
  return h('div', { class: 'not-found', id }, h('h2', null, title), h('p', { class: 'muted' }, sentence));
}

async function revokeDialog(id, terminate) {
  const ok = await modal({
    title: (terminate ? 'Terminate' : 'Revoke') + ' this task?', confirmText: terminate ? 'Terminate' : 'Revoke', danger: true,
    body: [h('p', null, terminate ?
      'Workers drop it if it has not started, and stop it if it is running. Terminating a running task can leave its side effects half done.' :
      'Workers will not start it. If it is already running, it finishes.'), h('p', null, h('code', null, id))],
  });
  if (ok) control(terminate ? 'Terminate' : 'Revoke', '/api/tasks/' + encodeURIComponent(id) + '/revoke', { terminate });
}

function viewTask(ctx) {
  const id = ctx.parts[1];
  setTitle('Task ' + shortId(id));
  ensureStream({ task: id });
  const root = h('div', { id: 'task-detail', 'data-task-id': id }, h('div', { class: 'empty' }, 'Loading…'));
  ctx.main.append(root);
  let task = null;

  function render(t) {
    task = t;
    root.setAttribute('data-state', t.state || '');
    const rec = t.record || null;
    const finished = FINISHED.has(t.state);
    const prog = progressOf(rec && rec.meta);
    const actions = canControl() ? h('span', { class: 'btn-group actions control' },
      h('button', { class: 'btn btn-sm', type: 'button', testid: 'task-revoke', disabled: finished, onclick: () => revokeDialog(t.id, false) }, 'Revoke'),
      h('button', { class: 'btn btn-sm btn-danger', type: 'button', testid: 'task-terminate', disabled: finished, onclick: () => revokeDialog(t.id, true) }, 'Terminate')) : null;
    const links = [];
    if (t.root_id) links.push(h('a', { id: 'task-canvas-link', href: '#/canvas/' + encodeURIComponent(t.root_id), class: 'btn btn-sm' }, 'Canvas graph'));
    if (t.trace_url) links.push(h('a', { id: 'task-trace-link', href: t.trace_url, target: '_blank', rel: 'noopener noreferrer', class: 'btn btn-sm' }, 'Trace in Jaeger ↗'));
    const first = t.timeline && t.timeline.length ? t.timeline[0].at_ms : null;
    const row = (k, v) => [h('dt', null, k), h('dd', null, v)];
    const children = t.children || [];
    const result = rec && rec.result !== undefined && rec.result !== null ? JSON.stringify(rec.result, null, 2) : null;
    const otherMeta = rec && rec.meta && typeof rec.meta === 'object' ? Object.assign({}, rec.meta) : null;
    if (otherMeta && prog) { delete otherMeta.step; delete otherMeta.total; }

    fill(root, 
      h('div', { class: 'task-head' },
        h('h2', { id: 'task-name' }, t.name || 'unknown task'), statePill(t.state, { id: 'task-state' }),
        rec && rec.state && rec.state !== t.state ? h('span', { class: 'muted' }, 'record: ', statePill(rec.state)) : null,
        h('span', { class: 'id' }, t.id), h('span', { class: 'btn-group actions' }, links, actions)),
      prog ? h('section', { class: 'card panel' }, h('div', { class: 'panel-body' },
        h('div', { style: 'display:flex;justify-content:space-between;margin-bottom:6px' }, h('strong', null, 'Progress'),
          h('span', { class: 'num' }, fmtNum(prog.step) + ' / ' + fmtNum(prog.total) + ' · ' + Math.round(prog.pct) + '%')),
        h('div', { class: 'progress', id: 'task-progress', 'data-step': prog.step, 'data-total': prog.total, role: 'progressbar',
          'aria-valuenow': prog.step, 'aria-valuemax': prog.total }, h('div', { style: 'width:' + prog.pct.toFixed(1) + '%' })))) : null,
      h('div', { class: 'grid-2' },
        panel('Details', null, h('div', { class: 'panel-body' }, h('dl', { class: 'kv' },
          row('Queue', t.queue || '—'),
          row('Worker', h('span', { id: 'task-worker' }, t.worker ? workerLink(t.worker) : '—')),
          row('Run time', h('span', { id: 'task-runtime', class: 'num' }, fmtDur(t.runtime_ms))),
          row('Retries', fmtNum(t.retries || 0)),
          row('Sent', fmtTime(t.sent_ms, true)), row('Received', fmtTime(t.received_ms, true)),
          row('Started', fmtTime(t.started_ms, true)), row('Finished', fmtTime(t.ended_ms, true)),
          row('Parent', h('span', { id: 'task-parent' }, taskLink(t.parent_id, t.parent_id || '—'))),
          row('Root', t.root_id && t.root_id !== t.id ? taskLink(t.root_id, t.root_id) : t.root_id ? h('span', { class: 'muted' }, 'this task') : '—'),
          t.group_id ? row('Group', h('code', null, t.group_id)) : null,
          t.chord_id ? row('Chord', h('code', null, t.chord_id)) : null,
          row('Children', h('span', { id: 'task-children' }, children.length ? children.map((c) => h('div', null, taskLink(c, c))) : '—')),
          rec && rec.trace_id ? row('Trace id', h('code', null, rec.trace_id)) : null))),
        panel('Timeline', null, h('div', { class: 'panel-body' }, t.timeline && t.timeline.length ?
          h('ul', { class: 'timeline', id: 'task-timeline' }, t.timeline.map((ev) => h('li', { class: 't-' + ev.type, 'data-type': ev.type },
            h('span', { class: 'dot' }),
            h('span', { class: 'num', title: fmtTime(ev.at_ms, true) }, fmtTime(ev.at_ms, true), first !== null && ev.at_ms !== first ? h('div', { class: 'muted', style: 'font-size:11.5px' }, '+' + fmtDur(ev.at_ms - first)) : null),
            h('span', null, h('span', { class: 'ev' }, TIMELINE_LABEL[ev.type] || ev.type),
              ev.worker ? h('span', { class: 'muted' }, ' on ', ev.worker) : null,
              ev.retries ? h('span', { class: 'muted' }, ' · retry ' + ev.retries) : null,
              ev.delivered > 1 ? h('span', { class: 'muted' }, ' · delivery ' + ev.delivered) : null,
              ev.reason ? h('div', { class: 'muted' }, ev.reason) : null,
              ev.error ? h('div', { style: 'color:var(--red)' }, typeof ev.error === 'string' ? ev.error : causeText(ev.error)) : null)))) :
          h('div', { class: 'muted', id: 'task-timeline' }, 'No event has been seen for this task yet.')))),
      rec && rec.error ? panel('Error', null, h('div', { class: 'panel-body' }, errorBlock(rec.error))) : null,
      result !== null ? panel('Result', null, h('div', { class: 'panel-body' }, h('pre', { class: 'code', id: 'task-result' }, result))) :
        finished || !rec ? null : null,
      h('div', { class: 'grid-2' },
        panel('Arguments', null, h('div', { class: 'panel-body' }, t.args !== null && t.args !== undefined ?
          h('pre', { class: 'code', id: 'task-args' }, prettyJson(t.args)) : h('span', { class: 'muted', id: 'task-args' }, 'Not known (the task was sent before the dashboard started, or its arguments were not recorded).'))),
        panel('Keyword arguments', null, h('div', { class: 'panel-body' }, t.kwargs !== null && t.kwargs !== undefined ?
          h('pre', { class: 'code', id: 'task-kwargs' }, prettyJson(t.kwargs)) : h('span', { class: 'muted', id: 'task-kwargs' }, 'None.')))),
      otherMeta && Object.keys(otherMeta).length ? panel('State meta', null, h('div', { class: 'panel-body' },
        h('pre', { class: 'code', id: 'task-meta' }, JSON.stringify(otherMeta, null, 2)))) : null);
  }

  (async () => {
    try {
      const t = await api.get('/api/tasks/' + encodeURIComponent(id));
      if (!ctx.alive()) return;
      // The stream's first task event is read after it subscribed to changes: once one has
      // rendered, this read may only be older.
      if (!task) render(t);
    } catch (e) {
      if (!ctx.alive()) return;
      if (e.status === 404) {
        fill(root, notFound('task-not-found', 'No task with id ' + id,
          h('span', null, 'The dashboard has not seen this task, and there is no stored result for it. Check the id, or ', h('a', { href: '#/tasks?q=' + encodeURIComponent(id.slice(0, 8)) }, 'search by prefix'), '.')));
        setTitle('Task not found');
      } else if (e.status === 400) {
        fill(root, notFound('task-not-found', 'Not a task id: ' + id, e.message));
      } else showError(e);
    }
    ctx.ready();
  })();

  return {
    onTask: (t) => { if (t && t.id === id && !$('#modal-root').firstChild) render(t); },
    onTasks: (tasks) => {
      // A summary update without a `task` event (e.g. state change) refreshes the pill at least.
      if (!task) return;
      const t = tasks.find((x) => x.id === id);
      if (t && t.updated_ms > (task.updated_ms || 0) && !$('#modal-root').firstChild) render(Object.assign({}, task, t));
    },
  };
}

/* ───────────────────────────── views: canvas ───────────────────────────── */

const STATE_COLOR = { SUCCESS: '#1a9f5c', FAILURE: '#d23f3f', STARTED: '#2f6fde', RETRY: '#c98200', REVOKED: '#7b4fd6', RECEIVED: '#98a2b3', PENDING: '#c3c9d4' };
const NODE_W = 190, NODE_H = 46, GAP_X = 56, GAP_Y = 12, PAD = 24;

/** Lays out a canvas: collapses big chord headers, layers nodes by longest path (left to right), stacks each layer. */
function layoutCanvas(cv) {
  const nodes = new Map(cv.nodes.map((n) => [n.id, Object.assign({ kind: 'task' }, n)]));
  const alias = new Map();
  for (const c of cv.chords || []) {
    const members = cv.nodes.filter((n) => n.chord_id === c.id && n.id !== c.body);
    if (members.length > 20) {
      const cid = 'chord:' + c.id;
      const size = c.size || members.length;
      nodes.set(cid, { id: cid, kind: 'counter', chord: c, size, done: c.done, failed: c.failed,
        state: c.failed ? 'FAILURE' : c.done >= size ? 'SUCCESS' : 'STARTED', name: 'chord header', chord_id: c.id });
      for (const m of members) { nodes.delete(m.id); alias.set(m.id, cid); }
    }
  }
  const A = (id) => alias.get(id) || id;
  let edges = (cv.edges || []).map((e) => ({ from: A(e.from), to: A(e.to) }));
  if (!edges.length) edges = cv.nodes.filter((n) => n.parent_id).map((n) => ({ from: A(n.parent_id), to: A(n.id) }));
  // A chord's body follows its header: every member (or the collapsed counter) points at it, so the
  // body sits in the column after the header even when its recorded parent is not in the graph.
  for (const c of cv.chords || []) {
    if (!c.body || !nodes.has(c.body)) continue;
    for (const n of cv.nodes) if (n.chord_id === c.id && n.id !== c.body) edges.push({ from: A(n.id), to: c.body });
  }
  const seen = new Set();
  edges = edges.filter((e) => e.from !== e.to && nodes.has(e.from) && nodes.has(e.to) && !seen.has(e.from + '>' + e.to) && seen.add(e.from + '>' + e.to));
  const preds = new Map(Array.from(nodes.keys()).map((k) => [k, []]));
  for (const e of edges) preds.get(e.to).push(e.from);
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const d = preds.get(id).length ? 1 + Math.max(...preds.get(id).map(depth)) : 0;
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  const order = Array.from(nodes.keys());
  order.forEach(depth);
  const layers = [];
  for (const id of order) (layers[layer.get(id)] = layers[layer.get(id)] || []).push(id);
  const pos = new Map();
  const maxRows = Math.max(1, ...layers.map((l) => l.length));
  const totalH = maxRows * NODE_H + (maxRows - 1) * GAP_Y;
  layers.forEach((ids, li) => {
    ids.sort((a, b) => {
      const ga = (nodes.get(a).group_id || nodes.get(a).chord_id || ''), gb = (nodes.get(b).group_id || nodes.get(b).chord_id || '');
      return ga === gb ? order.indexOf(a) - order.indexOf(b) : ga < gb ? -1 : 1;
    });
    const hgt = ids.length * NODE_H + (ids.length - 1) * GAP_Y;
    ids.forEach((id, i) => pos.set(id, { x: PAD + li * (NODE_W + GAP_X), y: PAD + (totalH - hgt) / 2 + i * (NODE_H + GAP_Y) }));
  });
  return { nodes, edges, pos, width: PAD * 2 + layers.length * NODE_W + Math.max(0, layers.length - 1) * GAP_X, height: PAD * 2 + totalH + 14 };
}

function drawCanvas(cv) {
  const L = layoutCanvas(cv);
  const svg = s('svg', { id: 'canvas-graph', width: L.width, height: L.height, viewBox: `0 0 ${L.width} ${L.height}` },
    s('defs', null, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#9aa4b5' }))));
  // Clusters: members of one group (or chord header) stacked in the same column get a dashed box.
  const clusters = new Map();
  for (const [id, n] of L.nodes) {
    const key = n.kind === 'task' ? (n.chord_id && !(cv.chords || []).some((c) => c.body === id) ? 'chord:' + n.chord_id : n.group_id ? 'group:' + n.group_id : null) : null;
    if (key) (clusters.get(key) || clusters.set(key, []).get(key)).push(L.pos.get(id));
  }
  for (const [key, ps] of clusters) {
    if (ps.length < 2) continue;
    const x0 = Math.min(...ps.map((p) => p.x)) - 8, y0 = Math.min(...ps.map((p) => p.y)) - 18;
    const x1 = Math.max(...ps.map((p) => p.x)) + NODE_W + 8, y1 = Math.max(...ps.map((p) => p.y)) + NODE_H + 8;
    svg.append(s('rect', { class: 'graph-cluster', x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 8 }),
      s('text', { class: 'graph-cluster-label', x: x0 + 8, y: y0 + 12 }, key.startsWith('chord:') ? 'chord header' : 'group'));
  }
  for (const e of L.edges) {
    const a = L.pos.get(e.from), b = L.pos.get(e.to);
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2, mx = (x1 + x2) / 2;
    svg.append(s('path', { class: 'graph-edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
  }
  for (const [id, n] of L.nodes) {
    const p = L.pos.get(id);
    const color = STATE_COLOR[n.state] || '#1b9bb0';
    const name = (n.name || 'task').length > 24 ? n.name.slice(0, 23) + '…' : (n.name || 'task');
    const g = n.kind === 'counter' ?
      s('g', { class: 'graph-node', testid: 'canvas-chord-counter', 'data-chord-id': n.chord.id, 'data-done': n.done, 'data-size': n.size, 'data-state': n.state },
        s('rect', { class: 'box', x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 7 }),
        s('rect', { x: p.x, y: p.y, width: 5, height: NODE_H, rx: 2, fill: color }),
        s('rect', { x: p.x + 14, y: p.y + NODE_H - 10, width: NODE_W - 28, height: 4, rx: 2, fill: '#eef1f5' }),
        s('rect', { x: p.x + 14, y: p.y + NODE_H - 10, width: (NODE_W - 28) * Math.min(1, n.done / (n.size || 1)), height: 4, rx: 2, fill: color }),
        s('text', { class: 'name', x: p.x + 14, y: p.y + 18 }, fmtNum(n.done) + ' / ' + fmtNum(n.size) + ' done'),
        s('text', { class: 'sub', x: p.x + 14, y: p.y + 31 }, 'chord header' + (n.failed ? ' · ' + n.failed + ' failed' : '')),
        s('title', null, 'Chord ' + n.chord.id + ': ' + n.done + ' of ' + n.size + ' header tasks done')) :
      s('a', { href: '#/tasks/' + encodeURIComponent(id) },
        s('g', { class: 'graph-node', testid: 'canvas-node', 'data-task-id': id, 'data-state': n.state || '' },
          s('rect', { class: 'box', x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 7 }),
          s('rect', { x: p.x, y: p.y, width: 5, height: NODE_H, rx: 2, fill: color }),
          s('text', { class: 'name', x: p.x + 14, y: p.y + 19 }, name),
          s('circle', { cx: p.x + 18, cy: p.y + 32, r: 3.5, fill: color }),
          s('text', { class: 'sub', x: p.x + 26, y: p.y + 35 }, (n.state || '?') + ' · ' + shortId(id)),
          s('title', null, (n.name || '') + '\n' + id + '\n' + (n.state || ''))));
    svg.append(g);
  }
  return svg;
}

function viewCanvas(ctx) {
  const rootId = ctx.parts[1];
  setTitle('Canvas ' + shortId(rootId));
  ensureStream({ canvas: rootId });
  const summary = h('div', { id: 'canvas-summary', class: 'chord-progress' });
  const wrap = h('div', { class: 'graph-wrap' }, h('div', { class: 'empty' }, 'Loading…'));
  const box = h('div', null, panel('Canvas', h('a', { href: '#/tasks/' + encodeURIComponent(rootId), class: 'mono' }, 'root ' + rootId), h('div', { class: 'panel-body' }, summary), wrap));
  ctx.main.append(box);
  let shown = false;
  function render(cv) {
    shown = true;
    const by = {};
    for (const n of cv.nodes) by[n.state] = (by[n.state] || 0) + 1;
    summary.setAttribute('data-total', cv.nodes.length);
    summary.setAttribute('data-success', by.SUCCESS || 0);
    fill(summary, h('span', null, h('strong', null, fmtNum(cv.nodes.length)), ' tasks'),
      Object.entries(by).map(([st, n]) => h('span', null, statePill(st), ' ', fmtNum(n))),
      (cv.chords || []).map((c) => h('span', { testid: 'chord-progress', 'data-chord-id': c.id, 'data-done': c.done, 'data-size': c.size === null ? '' : c.size, class: 'badge badge-muted' },
        'chord: ' + fmtNum(c.done) + ' of ' + (c.size === null ? '?' : fmtNum(c.size)) + ' done' + (c.failed ? ', ' + c.failed + ' failed' : ''))),
      cv.truncated ? h('span', { class: 'badge badge-amber' }, 'truncated: the canvas is larger than the dashboard keeps') : null);
    fill(wrap, cv.nodes.length ? drawCanvas(cv) : emptyState('Empty canvas', 'No task of this canvas has been seen yet.'));
  }
  (async () => {
    try {
      const cv = await api.get('/api/canvases/' + encodeURIComponent(rootId));
      // As for a task: a canvas the stream has shown is newer than this read.
      if (ctx.alive() && !shown) render(cv);
    } catch (e) {
      if (!ctx.alive()) return;
      if (e.status === 404 || e.status === 400) fill(box, notFound('canvas-not-found', 'No canvas with root ' + rootId, e.message));
      else showError(e);
    }
    ctx.ready();
  })();
  return { onCanvas: (cv) => { if (cv && cv.root_id === rootId) render(cv); } };
}

/* ───────────────────────────── views: queues ───────────────────────────── */

function viewQueues(ctx) {
  setTitle('Queues');
  ensureStream();
  const qBox = h('div', { class: 'table-wrap short' }, h('div', { class: 'empty' }, 'Loading…'));
  const charts = h('div', { class: 'small-multiples', id: 'queue-charts' });
  const rlBox = h('div', { class: 'table-wrap short' });
  const pwBox = h('div', { class: 'table-wrap short' });
  const rlTask = h('input', { id: 'rl-task', placeholder: 'tasks.add', list: 'rl-tasks', size: 18, required: true });
  const rlRate = h('input', { id: 'rl-rate', placeholder: '10/s, 100/m or off', size: 14, required: true });
  const rlWorker = h('select', { id: 'rl-worker', disabled: true }, h('option', { value: '' }, '(choose a worker)'));
  const rlScope = h('select', { id: 'rl-scope', onchange: () => { rlWorker.disabled = rlScope.value !== 'worker'; } },
    h('option', { value: 'cluster' }, 'Cluster-wide'), h('option', { value: 'worker' }, 'One worker'));
  const rlError = h('div', { class: 'field-error', id: 'rl-error', hidden: true });
  const rlForm = h('form', { id: 'rate-limit-form', class: 'inline-form control', onsubmit: (e) => { e.preventDefault(); setRate(); } },
    h('div', { class: 'field' }, h('label', { for: 'rl-task' }, 'Task'), rlTask),
    h('div', { class: 'field' }, h('label', { for: 'rl-rate' }, 'Rate'), rlRate),
    h('div', { class: 'field' }, h('label', { for: 'rl-scope' }, 'Scope'), rlScope),
    h('div', { class: 'field' }, h('label', { for: 'rl-worker' }, 'Worker'), rlWorker),
    h('button', { class: 'btn btn-primary', id: 'rl-submit', type: 'submit' }, 'Set rate limit'), h('datalist', { id: 'rl-tasks' }));
  const pwWorker = h('select', { id: 'pw-worker' }, h('option', { value: '' }, 'All workers'));
  const pwWeights = h('input', { id: 'pw-weights', placeholder: '1,1,1,1,1,2,4,8,16,32', size: 24 });
  const pwForm = h('form', { id: 'weights-form', class: 'inline-form control', onsubmit: (e) => { e.preventDefault(); setWeights(false); } },
    h('div', { class: 'field' }, h('label', { for: 'pw-worker' }, 'Worker'), pwWorker),
    h('div', { class: 'field' }, h('label', { for: 'pw-weights' }, 'Weights (priority 0 … 9)'), pwWeights),
    h('button', { class: 'btn btn-primary', id: 'pw-submit', type: 'submit' }, 'Set weights'),
    h('button', { class: 'btn', id: 'pw-reset', type: 'button', onclick: () => setWeights(true) }, 'Reset'));
  ctx.main.append(panel('Queues', h('span', { class: 'muted' }, 'sampled every 5 s'), qBox),
    h('section', { class: 'panel' }, charts),
    h('div', { class: 'grid-2' },
      panel('Rate limits', null, canControl() ? h('div', { class: 'panel-body' }, rlForm, rlError) : null, rlBox),
      panel('Priority weights', null, canControl() ? h('div', { class: 'panel-body' }, pwForm) : null, pwBox)));

  async function setRate() {
    rlError.hidden = true;
    const body = { task: rlTask.value.trim(), rate: rlRate.value.trim(), scope: rlScope.value };
    if (!body.task || !body.rate) { rlError.textContent = 'Give a task name and a rate (e.g. 10/s), or "off".'; rlError.hidden = false; return; }
    if (body.scope === 'worker') {
      if (!rlWorker.value) { rlError.textContent = 'Choose the worker.'; rlError.hidden = false; return; }
      body.worker = rlWorker.value;
    }
    try { showReplies('Rate limit', await api.post('/api/rate-limits', body)); load(); } catch (e) { rlError.textContent = e.message; rlError.hidden = false; toast('Rate limit: ' + e.message, 'error'); }
  }
  async function setWeights(reset) {
    // Ten comma-separated weights (priorities 0 to 9), "strict", or "reset".
    const weights = reset ? 'reset' : pwWeights.value.trim();
    if (!weights) { toast('Give ten weights separated by commas, or "strict".', 'error'); return; }
    const res = await control('Priority weights', '/api/priority-weights', { weights, worker: pwWorker.value || null });
    if (res) load();
  }

  let busy = false, last = 0, optionsDone = false;
  function render(d) {
    const qs2 = d.queues || [];
    // `error`: the last reading failed; the queues shown (if any) are from the reading before it.
    const readError = d.error ? h('div', { class: 'filter-error', id: 'queues-error', role: 'alert' },
      d.read_at_ms ? 'The last reading failed (' + d.error + '); these figures are from ' + fmtTime(d.read_at_ms) + '.' : 'Reading the queues failed: ' + d.error + '.') : null;
    fill(qBox, readError, qs2.length ? h('table', { id: 'queues-table' },
      h('thead', null, h('tr', null, ['Queue', 'Waiting', 'In flight', 'By priority', 'Consumers', 'In', 'Out', 'Oldest waiting'].map((t, i) => h('th', { class: i && i !== 3 ? 'num' : null }, t)))),
      h('tbody', null, qs2.map((q) => {
        const maxD = Math.max(1, ...(q.levels || []).map((l) => l.depth));
        return h('tr', { testid: 'queue-row', 'data-queue': q.name },
          h('td', null, h('a', { href: '#/tasks?queue=' + encodeURIComponent(q.name) }, q.name)),
          h('td', { class: 'num' }, fmtNum(q.depth)), h('td', { class: 'num' }, fmtNum(q.in_flight)),
          h('td', null, h('div', { class: 'levels', title: (q.levels || []).map((l) => 'p' + l.priority + ': ' + l.depth + ' waiting, ' + l.in_flight + ' in flight').join('\n') },
            (q.levels || []).map((l) => h('span', { style: 'height:' + Math.max(2, 22 * l.depth / maxD) + 'px' })))),
          h('td', { class: 'num' }, fmtNum(q.consumers)), h('td', { class: 'num' }, fmtRate(q.rate_in_per_s)), h('td', { class: 'num' }, fmtRate(q.rate_out_per_s)),
          h('td', { class: 'num' }, q.oldest_age_ms === null ? '—' : fmtDur(q.oldest_age_ms)));
      }))) : d.read_at_ms ? emptyState('No queues yet', 'A queue appears once a task is sent to it or a worker consumes it.') :
        d.error ? emptyState('No reading yet', 'The dashboard reads the queues again every 5 s.') :
        emptyState('Reading the queues…', 'The first reading comes as soon as the dashboard is connected to NATS.'));
    const pts = (d.history && d.history.points) || [];
    const now = Date.now();
    fill(charts, ...qs2.map((q) => h('div', { class: 'card panel' }, h('div', { class: 'panel-head' }, h('h2', null, q.name), h('span', { class: 'muted' }, 'last hour')),
      h('div', { class: 'panel-body' }, lineChart({ xMin: now - 3600000, xMax: now, height: 150, width: 560, series: [
        { name: 'waiting', color: PALETTE[0], area: true, points: pts.filter((p) => p.queues[q.name]).map((p) => [p.at_ms, p.queues[q.name].depth]) },
        { name: 'in', color: PALETTE[1], points: pts.filter((p) => p.queues[q.name]).map((p) => [p.at_ms, p.queues[q.name].in]) },
        { name: 'out', color: PALETTE[2], points: pts.filter((p) => p.queues[q.name]).map((p) => [p.at_ms, p.queues[q.name].out]) }] })))));
    const rls = d.rate_limits || [];
    fill(rlBox, rls.length ? h('table', { id: 'rate-limits-table' }, h('thead', null, h('tr', null, h('th', null, 'Task'), h('th', null, 'Rate'), h('th', null, 'Workers'), canControl() ? h('th', null, '') : null)),
      h('tbody', null, rls.map((r) => h('tr', { testid: 'rate-limit-row', 'data-task': r.task },
        h('td', { class: 'mono' }, r.task), h('td', { class: 'mono', 'data-rate': r.rate || '' }, r.rate || h('span', { class: 'muted' }, 'none')),
        h('td', null, (r.workers || []).map((w) => h('span', { class: 'chip' }, w))),
        canControl() ? h('td', null, h('button', { class: 'btn btn-sm', type: 'button', onclick: () => { rlTask.value = r.task; rlRate.value = r.rate || ''; rlRate.focus(); } }, 'Edit')) : null)))) :
      emptyState('No task reported', 'Workers report the tasks they run with their rate limits.'));
    // Runtime settings only: [{scope: cluster|workers|worker, worker, weights: [10] | null (strict)}].
    const pw = d.priority_weights || [];
    const scopeCell = (p) => (p.scope === 'worker' && p.worker ? workerLink(p.worker) : h('span', null, 'All workers'));
    fill(pwBox, pw.length ? h('table', { id: 'weights-table' }, h('thead', null, h('tr', null, h('th', null, 'Worker'), h('th', null, 'Weights (priority 0 … 9)'))),
      h('tbody', null, pw.map((p) => h('tr', { testid: 'weights-row', 'data-worker': p.worker || '' }, h('td', null, scopeCell(p)),
        h('td', { class: 'mono' }, p.weights ? p.weights.join(', ') : 'strict'))))) :
      emptyState('No runtime weights', 'Every worker uses the weights of its own flags.'));
    if (!optionsDone) {
      optionsDone = true;
      $('#rl-tasks', rlForm).append(...rls.map((r) => h('option', { value: r.task })));
    }
    // The online workers, for the per-worker controls; kept in step as workers come and go.
    syncOptions(rlWorker, d.workers || []);
    syncOptions(pwWorker, d.workers || []);
  }
  async function load() {
    if (busy) return;
    busy = true; last = Date.now();
    try { const d = await api.get('/api/queues'); if (ctx.alive()) { render(d); ctx.ready(); } } catch (e) { if (ctx.alive()) showError(e); } finally { busy = false; }
  }
  load();
  // The one allowed refresh: on `overview` events (every 1 s), at most every 4 s (the server samples every 5 s).
  return { onOverview: (ov, hello) => { if (!hello && Date.now() - last > 4000) load(); } };
}

/** Makes `select`'s options after its first (the placeholder) be `values`, keeping the choice. */
function syncOptions(select, values) {
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.length === values.length && have.every((v, i) => v === values[i])) return;
  const chosen = select.value;
  while (select.options.length > 1) select.remove(1);
  select.append(...values.map((v) => h('option', { value: v }, v)));
  select.value = values.includes(chosen) ? chosen : '';
}

/* ───────────────────────────── views: dead letters ───────────────────────────── */

async function requeue(body, after) {
  try {
    const res = await api.post('/api/dead-letters/requeue', body);
    const ok = res.requeued || [], bad = res.failed || [];
    if (ok.length === 1) toast(h('span', null, 'Requeued ', h('a', { href: '#/tasks/' + encodeURIComponent(ok[0].task_id), id: 'requeued-task-link' }, shortId(ok[0].task_id))), 'ok');
    else if (ok.length) toast('Requeued ' + fmtNum(ok.length) + ' letters.', 'ok');
    for (const f of bad) toast('Letter ' + f.seq + ': ' + f.message, 'error');
    if (!ok.length && !bad.length) toast('Nothing to requeue.', 'info');
    if (after) after(res);
  } catch (e) { toast('Requeue failed: ' + e.message, 'error'); }
}

async function purge(body, label, after) {
  const ok = await modal({ title: 'Purge ' + label + '?', confirmText: 'Purge', danger: true,
    body: [h('p', null, 'The messages are deleted from the dead-letter stream for good. This cannot be undone.')] });
  if (!ok) return;
  try { const res = await api.post('/api/dead-letters/purge', body); toast('Purged ' + fmtNum(res.purged) + ' letters.', 'ok'); if (after) after(res); } catch (e) { toast('Purge failed: ' + e.message, 'error'); }
}

function viewDeadLetters(ctx) {
  setTitle('Dead letters');
  ensureStream();
  const f = { queue: ctx.params.get('queue') || '', reason: ctx.params.get('reason') || '' };
  const page = Math.max(1, parseInt(ctx.params.get('page') || '1', 10) || 1);
  const qIn = h('input', { id: 'dl-queue', placeholder: 'any', value: f.queue, size: 12 });
  const rIn = h('input', { id: 'dl-reason', placeholder: 'e.g. max_retries', value: f.reason, size: 16 });
  const form = h('form', { class: 'filters', id: 'dl-filters', onsubmit: (e) => { e.preventDefault(); location.hash = '#/dead-letters' + qs({ queue: qIn.value.trim(), reason: rIn.value.trim() }); } },
    h('div', { class: 'field' }, h('label', { for: 'dl-queue' }, 'Queue'), qIn), h('div', { class: 'field' }, h('label', { for: 'dl-reason' }, 'Reason'), rIn),
    h('div', { class: 'btn-group' }, h('button', { class: 'btn btn-primary', type: 'submit' }, 'Apply'), h('button', { class: 'btn btn-ghost', type: 'button', onclick: () => { location.hash = '#/dead-letters'; } }, 'Clear')));
  const filterError = h('div', { class: 'filter-error', id: 'dl-filter-error', hidden: true });
  const total = h('span', { class: 'muted', id: 'dl-total' });
  const box = h('div', { class: 'table-wrap' }, h('div', { class: 'empty' }, 'Loading…'));
  const selected = () => $$('input[data-testid=dl-check]:checked', box).map((c) => Number(c.getAttribute('data-seq')));
  const reload = () => route();
  const actions = canControl() ? h('span', { class: 'btn-group control' },
    h('button', { class: 'btn btn-sm', id: 'dl-requeue-selected', type: 'button', onclick: () => { const s2 = selected(); if (s2.length) requeue({ seqs: s2 }, reload); else toast('Select letters first.', 'info'); } }, 'Requeue selected'),
    h('button', { class: 'btn btn-sm', id: 'dl-requeue-all', type: 'button', onclick: () => requeue({ all: true, queue: f.queue || null }, reload) }, f.queue ? 'Requeue all in ' + f.queue : 'Requeue all'),
    h('button', { class: 'btn btn-sm btn-danger', id: 'dl-purge-selected', type: 'button', onclick: () => { const s2 = selected(); if (s2.length) purge({ seqs: s2 }, s2.length + ' letters', reload); else toast('Select letters first.', 'info'); } }, 'Purge selected'),
    h('button', { class: 'btn btn-sm btn-danger', id: 'dl-purge-all', type: 'button', onclick: () => purge({ all: true, queue: f.queue || null }, f.queue ? 'every letter of ' + f.queue : 'every dead letter', reload) }, 'Purge all')) : null;
  const prev = h('button', { class: 'btn btn-sm', type: 'button', disabled: page <= 1, onclick: () => { location.hash = '#/dead-letters' + qs(Object.assign({}, f, { page: page - 1 > 1 ? page - 1 : '' })); } }, '← Newer');
  const next = h('button', { class: 'btn btn-sm', type: 'button', disabled: true, onclick: () => { location.hash = '#/dead-letters' + qs(Object.assign({}, f, { page: page + 1 })); } }, 'Older →');
  ctx.main.append(h('section', { class: 'card panel' }, form, filterError, h('div', { class: 'panel-head' }, h('h2', null, 'Dead letters ', total), actions), box,
    h('div', { class: 'toolbar' }, h('span'), h('span', { class: 'btn-group' }, prev, next))));
  (async () => {
    try {
      const d = await api.get('/api/dead-letters' + qs(Object.assign({}, f, { page, per_page: PER_PAGE })));
      if (!ctx.alive()) return;
      total.textContent = '· ' + fmtNum(d.total);
      next.disabled = page * PER_PAGE >= d.total;
      const letters = d.letters || [];
      const all = h('input', { type: 'checkbox', id: 'dl-check-all', title: 'Select all on this page', onchange: () => $$('input[data-testid=dl-check]', box).forEach((c) => { c.checked = all.checked; }) });
      fill(box, letters.length ? h('table', { id: 'dl-table' },
        h('thead', null, h('tr', null, canControl() ? h('th', null, all) : null, h('th', { class: 'num' }, 'Seq'), h('th', null, 'Time'), h('th', null, 'Queue'), h('th', null, 'Task'),
          h('th', null, 'Task id'), h('th', null, 'Reason'), h('th', null, 'Error'), h('th', null, 'Worker'), h('th', { class: 'num' }, 'Deliveries'), h('th', { class: 'num' }, 'Size'))),
        h('tbody', null, letters.map((l) => h('tr', { testid: 'dl-row', 'data-seq': l.seq, 'data-task-id': l.task_id || '' },
          canControl() ? h('td', null, h('input', { type: 'checkbox', testid: 'dl-check', 'data-seq': l.seq })) : null,
          h('td', { class: 'num' }, h('a', { href: '#/dead-letters/' + l.seq }, String(l.seq))),
          h('td', { class: 'num' }, fmtTime(l.time_ms)), h('td', null, l.queue || '—'), h('td', { class: 'mono ellipsis' }, l.task || '—'),
          h('td', null, taskLink(l.task_id)), h('td', null, h('span', { class: 'badge badge-amber' }, l.reason || '—')),
          h('td', { class: 'ellipsis', style: 'max-width:220px', title: l.error || '' }, l.error || h('span', { class: 'muted' }, '—')), h('td', { class: 'ellipsis', style: 'max-width:140px', title: l.worker || '' }, l.worker || '—'),
          h('td', { class: 'num' }, fmtNum(l.deliveries)), h('td', { class: 'num' }, fmtNum(l.size) + ' B'))))) :
        h('div', { id: 'dl-empty' }, emptyState(f.queue || f.reason ? 'No dead letter matches' : 'No dead letters',
          f.queue || f.reason ? 'Clear the filters to see every letter.' : 'Messages that could not be processed (bad arguments, too many deliveries, unknown task) land here.')));
    } catch (e) {
      if (!ctx.alive()) return;
      if (e.status === 400) { filterError.textContent = e.message; filterError.hidden = false; clear(box); } else showError(e);
    }
    ctx.ready();
  })();
  return {};
}

function viewLetter(ctx) {
  const seq = ctx.parts[1];
  setTitle('Dead letter ' + seq);
  ensureStream();
  const root = h('div', { id: 'letter-detail', 'data-seq': seq }, h('div', { class: 'empty' }, 'Loading…'));
  ctx.main.append(root);
  (async () => {
    try {
      const l = await api.get('/api/dead-letters/' + encodeURIComponent(seq));
      if (!ctx.alive()) return;
      let body = l.body !== null && l.body !== undefined ? prettyJson(l.body) : null;
      const row = (k, v) => [h('dt', null, k), h('dd', null, v)];
      fill(root, 
        h('div', { class: 'task-head' }, h('h2', null, 'Dead letter #' + l.seq), h('span', { class: 'badge badge-amber', id: 'letter-reason' }, l.reason || 'unknown reason'),
          canControl() ? h('span', { class: 'btn-group actions control' },
            h('button', { class: 'btn btn-sm btn-primary', id: 'letter-requeue', type: 'button', onclick: () => requeue({ seqs: [l.seq] }) }, 'Requeue'),
            h('button', { class: 'btn btn-sm btn-danger', id: 'letter-purge', type: 'button', onclick: () => purge({ seqs: [l.seq] }, 'this letter', () => { location.hash = '#/dead-letters'; }) }, 'Purge')) : null),
        h('div', { class: 'grid-2' },
          panel('Letter', null, h('div', { class: 'panel-body' }, h('dl', { class: 'kv' },
            row('Reason', l.reason || '—'), row('Error', l.error || '—'), row('Queue', l.queue || '—'), row('Task', l.task || '—'),
            row('Task id', l.task_id ? h('a', { id: 'letter-task-link', href: '#/tasks/' + encodeURIComponent(l.task_id), class: 'mono' }, l.task_id) : '—'),
            row('Worker', l.worker || '—'), row('Deliveries', fmtNum(l.deliveries)), row('Dead-lettered', fmtTime(l.time_ms, true)),
            row('Subject', h('code', null, l.subject || '—')), row('Size', fmtNum(l.size) + ' B')))),
          panel('Headers', null, h('div', { class: 'table-wrap short' }, (l.headers || []).length ? h('table', { id: 'letter-headers' },
            h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Value'))),
            h('tbody', null, l.headers.map(([k, v]) => h('tr', null, h('td', { class: 'mono' }, k), h('td', { class: 'mono', style: 'overflow-wrap:anywhere' }, v))))) :
            h('div', { class: 'empty', id: 'letter-headers' }, 'No headers.')))),
        panel('Body' + (l.body_truncated ? ' (truncated)' : ''), null, h('div', { class: 'panel-body' },
          body !== null ? h('pre', { class: 'code', id: 'letter-body' }, body) :
            l.body_base64 ? h('div', null, h('div', { class: 'muted' }, 'Not UTF-8 text; base64:'), h('pre', { class: 'code', id: 'letter-body' }, l.body_base64)) :
              h('span', { class: 'muted', id: 'letter-body' }, 'Empty body.'))));
    } catch (e) {
      if (!ctx.alive()) return;
      if (e.status === 404 || e.status === 400) fill(root, notFound('letter-not-found', 'No dead letter #' + seq, e.message));
      else showError(e);
    }
    ctx.ready();
  })();
  return {};
}

/* ───────────────────────────── boot ───────────────────────────── */

async function boot() {
  $('#error-banner .banner-close').addEventListener('click', hideError);
  window.addEventListener('hashchange', route);
  setInterval(tickRelTimes, 5000); // refreshes "3 s ago" texts; no API call
  try { await loadSession(); } catch (e) { showError(e); }
  route();
}

document.addEventListener('DOMContentLoaded', boot);
