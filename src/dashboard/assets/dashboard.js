// The masv agent dashboard: drawn from the agent's REST API (/api/v1) and kept up to date by
// its event stream (/api/v1/stream). No library, no build step; text goes into the page only
// through textContent, never as HTML. Requests that change something carry the session's CSRF
// token (the masv_csrf cookie) in X-CSRF-Token.
'use strict';

const PAGE_SIZE = 50;
const state = {
  transfers: new Map(), // id -> summary
  page: 0,
  filter: 'all',
  automations: null,
  bandwidth: null,
  samples: [], // [at, download, upload, download_limit, upload_limit]
  events: [],
  detail: null, // {kind, id}
  synced: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) node.append(c);
  return node;
}

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)masv_csrf=([^;]+)/);
  return m ? m[1] : '';
}

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf() } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const answer = await fetch('/api/v1' + path, init);
  if (answer.status === 401) {
    location.assign('/login');
    throw new Error('the session ended: log in again');
  }
  const text = await answer.text();
  let data;
  try { data = JSON.parse(text); } catch (_) { data = { message: text }; }
  if (!answer.ok) throw new Error(data.message || answer.statusText);
  return data;
}

function notice(message) {
  const n = $('notice');
  n.textContent = message || '';
  n.hidden = !message;
}

// Runs a button's request, saying what went wrong if it did.
async function act(method, path, body) {
  try {
    notice('');
    return await api(method, path, body);
  } catch (e) {
    notice(e.message);
    return null;
  }
}

// ---- formatting ----
function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
}
const rate = (n) => (n ? bytes(n) + '/s' : '');
function duration(s) {
  if (!isFinite(s) || s <= 0) return '';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
}
function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}
const idOf = (t) => t.download_id || t.upload_id;
const kindOf = (t) => (t.download_id ? 'download' : 'upload');

// ---- views ----
const VIEWS = ['transfers', 'detail', 'automations', 'throughput', 'events'];
function route() {
  const hash = location.hash.replace(/^#/, '') || 'transfers';
  let view = hash;
  state.detail = null;
  const m = hash.match(/^transfer\/(download|upload)\/(.+)$/);
  if (m) {
    view = 'detail';
    state.detail = { kind: m[1], id: decodeURIComponent(m[2]) };
  }
  if (!VIEWS.includes(view)) view = 'transfers';
  for (const v of VIEWS) $('view-' + v).hidden = v !== view;
  for (const a of document.querySelectorAll('nav a')) {
    const current = a.dataset.view === view || (view === 'detail' && a.dataset.view === 'transfers');
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (view === 'detail') loadDetail();
  if (view === 'throughput') drawChart();
  if (view === 'events') loadEvents();
  if (view === 'transfers') scheduleTransfers();
}

// ---- transfers ----
function visibleTransfers() {
  const f = state.filter;
  const all = [...state.transfers.values()].filter((t) =>
    f === 'all' ? true
      : f === 'download' || f === 'upload' ? kindOf(t) === f
      : f === 'active' ? t.state === 'transferring' || t.state === 'paused' || t.state === 'idle'
      : t.state === 'error');
  // Newest first; ids (ULIDs) break ties in creation order.
  all.sort((a, b) => (b.created_at.localeCompare(a.created_at)) || idOf(b).localeCompare(idOf(a)));
  return all;
}

let transfersPending = false;
function scheduleTransfers() {
  if (transfersPending) return;
  transfersPending = true;
  requestAnimationFrame(() => { transfersPending = false; renderTransfers(); });
}

const rows = new Map(); // id -> tr, for the rows of the page shown
function renderTransfers() {
  if ($('view-transfers').hidden) return;
  const all = visibleTransfers();
  const pages = Math.max(1, Math.ceil(all.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const first = state.page * PAGE_SIZE;
  const page = all.slice(first, first + PAGE_SIZE);
  $('page-info').textContent = all.length
    ? `${first + 1}–${first + page.length} of ${all.length}` : '';
  $('prev').disabled = state.page === 0;
  $('next').disabled = state.page >= pages - 1;
  $('no-transfers').hidden = !state.synced || all.length > 0;
  const body = $('transfer-rows');
  const keep = new Set(page.map(idOf));
  for (const [id, tr] of rows) if (!keep.has(id)) { tr.remove(); rows.delete(id); }
  let previous = null;
  for (const t of page) {
    const id = idOf(t);
    let tr = rows.get(id);
    if (!tr) { tr = transferRow(t); rows.set(id, tr); }
    updateRow(tr, t);
    // Rows are moved only when out of place, so a focused button keeps its focus.
    const wanted = previous ? previous.nextSibling : body.firstChild;
    if (wanted !== tr) body.insertBefore(tr, wanted);
    previous = tr;
  }
}

function actionButtons(t, cls) {
  const kind = kindOf(t), id = idOf(t), name = t.package_name || id;
  const base = `/${kind}s/${encodeURIComponent(id)}`;
  const button = (action, label, method, path) => el('button', {
    type: 'button', 'data-action': action, class: cls,
    'aria-label': `${label} ${name}`, text: label,
    onclick: async () => {
      if (action === 'remove' && !confirm(`Remove ${kind} ${name} from the agent?`)) return;
      const done = await act(method, base + path);
      if (done && action === 'remove') location.hash = '#transfers';
      if (done && state.detail) loadDetail();
    },
  });
  return [
    button('pause', 'Pause', 'POST', '/pause'),
    button('resume', 'Resume', 'POST', '/resume'),
    button('retry', 'Retry', 'POST', '/resume'),
    button('finalize', 'Finalize', 'POST', '/finalize'),
  ];
}

// Which buttons a transfer in its state offers.
function showButtons(container, t) {
  const can = {
    pause: t.state === 'transferring',
    resume: t.state === 'paused',
    retry: t.state === 'error',
    finalize: kindOf(t) === 'upload' && t.state === 'idle',
    remove: true,
  };
  for (const b of container.querySelectorAll('button[data-action]')) b.hidden = !can[b.dataset.action];
}

function transferRow(t) {
  const kind = kindOf(t), id = idOf(t);
  const link = el('a', { href: `#transfer/${kind}/${encodeURIComponent(id)}`, class: 'name' });
  const bar = el('progress', { max: '1', value: '0' });
  const actions = el('td', { 'data-label': 'Actions' }, el('div', { class: 'actions' }, ...actionButtons(t)));
  const tr = el('tr', { 'data-id': id, 'data-kind': kind },
    el('td', { 'data-label': 'Kind', text: kind === 'download' ? '↓ download' : '↑ upload' }),
    el('td', { 'data-label': 'Package' }, link),
    el('td', { 'data-label': 'State', class: 'state-cell' },
      el('span', { class: 'state' }), el('span', { class: 'why' }), el('span', { class: 'err' })),
    el('td', { 'data-label': 'Progress', class: 'num' }, bar, el('span', { class: 'pct' })),
    el('td', { 'data-label': 'Rate', class: 'num rate' }),
    el('td', { 'data-label': 'ETA', class: 'num eta' }),
    el('td', { 'data-label': 'Rule', class: 'rule' }),
    actions);
  return tr;
}

function waitingReason(t) {
  if (t.queue_position) return `queued (${t.queue_position})`;
  if (t.waiting) return t.waiting + (t.next_try_at ? ` · next try ${when(t.next_try_at)}` : '');
  return '';
}

function updateRow(tr, t) {
  const q = (s) => tr.querySelector(s);
  q('a.name').textContent = t.package_name || idOf(t);
  const st = q('.state');
  st.textContent = t.state;
  st.className = 'state state-' + t.state;
  q('.why').textContent = waitingReason(t);
  q('.err').textContent = t.error || '';
  const bar = q('progress');
  bar.max = Math.max(1, t.bytes_total);
  bar.value = t.bytes_done;
  const pct = t.bytes_total ? Math.floor((100 * t.bytes_done) / t.bytes_total) : (t.state === 'complete' ? 100 : 0);
  q('.pct').textContent = `${pct}% · ${bytes(t.bytes_done)} of ${bytes(t.bytes_total)}`;
  q('.rate').textContent = rate(t.bytes_per_second);
  q('.eta').textContent = t.bytes_per_second
    ? duration((t.bytes_total - t.bytes_done) / t.bytes_per_second) : '';
  q('.rule').textContent = t.rule || '';
  showButtons(tr, t);
}

// ---- detail ----
let detailLoading = false;
async function loadDetail() {
  const d = state.detail;
  if (!d || detailLoading) return;
  detailLoading = true;
  try {
    const t = await api('GET', `/${d.kind}s/${encodeURIComponent(d.id)}`);
    if (state.detail && state.detail.id === d.id) renderDetail(t);
  } catch (e) {
    notice(e.message);
  } finally {
    detailLoading = false;
  }
}

function renderDetail(t) {
  $('h-detail').textContent = `${kindOf(t) === 'download' ? 'Download' : 'Upload'}: ${t.package_name || idOf(t)}`;
  const box = $('detail-actions');
  const buttons = actionButtons(t);
  const remove = box.querySelector('[data-action=remove]');
  // The buttons are made anew for this transfer, keeping the one focused if any.
  const focused = document.activeElement && box.contains(document.activeElement)
    ? document.activeElement.dataset.action : null;
  for (const b of [...box.querySelectorAll('button')]) if (b !== remove) b.remove();
  for (const b of buttons) box.insertBefore(b, remove);
  remove.onclick = async () => {
    const kind = kindOf(t), id = idOf(t);
    if (!confirm(`Remove ${kind} ${t.package_name || id} from the agent?`)) return;
    if (await act('DELETE', `/${kind}s/${encodeURIComponent(id)}`)) location.hash = '#transfers';
  };
  showButtons(box, t);
  if (focused) { const b = box.querySelector(`[data-action=${focused}]`); if (b && !b.hidden) b.focus(); }
  const fields = [
    ['Id', idOf(t)], ['State', t.state], ['Waiting', waitingReason(t)], ['Error', t.error],
    ['Progress', `${bytes(t.bytes_done)} of ${bytes(t.bytes_total)} · ${t.files_done} of ${t.files_total} files`],
    ['Rate', rate(t.bytes_per_second)], ['Rule', t.rule], ['Link', t.url || t.link],
    ['Destination', t.dst_folder], ['Portal', t.subdomain],
    ['Recipients', (t.recipients || []).join(', ')], ['Package id', t.package_id],
    ['Created', when(t.created_at)], ['Updated', when(t.updated_at)],
  ];
  $('detail-fields').replaceChildren(...fields.filter(([, v]) => v).flatMap(([k, v]) =>
    [el('dt', { text: k }), el('dd', { text: String(v) })]));
  $('file-rows').replaceChildren(...(t.files || []).map((f) => el('tr', { 'data-file': f.name },
    el('td', { 'data-label': 'Name', text: f.name }),
    el('td', { 'data-label': 'Folder', text: f.path }),
    el('td', { 'data-label': 'Size', class: 'num', text: bytes(f.size) }),
    el('td', { 'data-label': 'State' }, el('span', { class: 'state state-' + f.state, text: f.state }),
      el('span', { class: 'err', text: f.error || '' })),
    el('td', { 'data-label': 'Progress', class: 'num' },
      el('progress', { max: String(Math.max(1, f.size)), value: String(f.bytes_done) })),
    el('td', { 'data-label': 'Hash', class: 'hash',
      text: Object.entries(f.hash || {}).map(([k, v]) => `${k}:${v}`).join(' ') }))));
}

// ---- automations ----
function renderAutomations() {
  const s = state.automations;
  if (!s) return;
  const err = $('config-error');
  err.hidden = !s.config_error;
  err.textContent = s.config_error
    ? `The configuration file has errors; the last good rules stay in force.\n${s.config_error}` : '';
  $('no-rules').hidden = s.automations.length > 0;
  const body = $('rule-rows');
  const old = new Map([...body.children].map((tr) => [tr.dataset.name, tr]));
  let previous = null;
  for (const r of s.automations) {
    let tr = old.get(r.name);
    old.delete(r.name);
    if (!tr) tr = ruleRow(r.name);
    const q = (sel) => tr.querySelector(sel);
    q('.kind').textContent = r.kind;
    const st = q('.state');
    st.textContent = r.state;
    st.className = 'state rule-state state-' + r.state;
    q('.last-run').textContent = when(r.last_run);
    q('.last-success').textContent = when(r.last_success);
    q('.next-run').textContent = when(r.next_run);
    q('.counts').textContent = Object.entries(r.counts || {}).filter(([, n]) => n)
      .map(([k, n]) => `${k} ${n}`).concat(r.failures ? [`failures ${r.failures}`] : []).join(' · ');
    q('.last-error').textContent = r.last_error || '';
    q('[data-action=enable]').hidden = r.enabled;
    q('[data-action=disable]').hidden = !r.enabled;
    const wanted = previous ? previous.nextSibling : body.firstChild;
    if (wanted !== tr) body.insertBefore(tr, wanted);
    previous = tr;
  }
  for (const tr of old.values()) tr.remove();
}

function ruleRow(name) {
  const path = `/automations/${encodeURIComponent(name)}`;
  const button = (action, label) => el('button', {
    type: 'button', 'data-action': action, 'aria-label': `${label} ${name}`, text: label,
    onclick: () => act('POST', `${path}/${action}`),
  });
  return el('tr', { 'data-name': name },
    el('td', { 'data-label': 'Rule', text: name }),
    el('td', { 'data-label': 'Kind', class: 'kind' }),
    el('td', { 'data-label': 'State' }, el('span', { class: 'state rule-state' })),
    el('td', { 'data-label': 'Last run', class: 'last-run' }),
    el('td', { 'data-label': 'Last success', class: 'last-success' }),
    el('td', { 'data-label': 'Next run', class: 'next-run' }),
    el('td', { 'data-label': 'Counts', class: 'counts' }),
    el('td', { 'data-label': 'Last error', class: 'last-error err' }),
    el('td', { 'data-label': 'Actions' }, el('div', { class: 'actions' },
      button('enable', 'Enable'), button('disable', 'Disable'), button('run', 'Run now'))));
}

// ---- throughput ----
function renderLimits() {
  const b = state.bandwidth;
  if (!b) return;
  const limit = (n) => (n ? rate(n) : 'unlimited');
  let text = `Limits in force: download ${limit(b.now.download)}, upload ${limit(b.now.upload)}`;
  if (b.now.next_change) text += ` · changes ${when(b.now.next_change)}`;
  $('limits').textContent = text;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart() {
  if ($('view-throughput').hidden) return;
  const last = state.samples[state.samples.length - 1];
  $('rates-now').textContent = last
    ? `Now: download ${rate(last[1]) || '0 B/s'}, upload ${rate(last[2]) || '0 B/s'}` : 'No samples yet.';
  const W = 720, H = 260, L = 70, R = 10, T = 10, B = 24;
  const now = last ? last[0] : Math.floor(Date.now() / 1000);
  const from = now - 3600;
  const shown = state.samples.filter((s) => s[0] > from);
  let top = 1024;
  for (const s of shown) top = Math.max(top, s[1], s[2], s[3] || 0, s[4] || 0);
  top *= 1.1;
  const x = (at) => (L + ((at - from) / 3600) * (W - L - R)).toFixed(1);
  const y = (v) => (T + (1 - v / top) * (H - T - B)).toFixed(1);
  const chart = $('chart');
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    parts.push(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(top * f), y2: y(top * f) }));
    parts.push(svg('text', { class: 'axis', x: L - 6, y: +y(top * f) + 4, 'text-anchor': 'end' }, rate(top * f) || '0'));
  }
  parts.push(svg('text', { class: 'axis', x: L, y: H - 6 }, '−60 min'));
  parts.push(svg('text', { class: 'axis', x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle' }, '−30 min'));
  parts.push(svg('text', { class: 'axis', x: W - R, y: H - 6, 'text-anchor': 'end' }, 'now'));
  const line = (cls, pick) => {
    const points = shown.filter((s) => pick(s) !== null).map((s) => `${x(s[0])},${y(pick(s))}`);
    if (points.length) parts.push(svg('polyline', { class: cls, points: points.join(' ') }));
  };
  line('limit-download', (s) => s[3]);
  line('limit-upload', (s) => s[4]);
  line('download', (s) => s[1]);
  line('upload', (s) => s[2]);
  chart.replaceChildren(...parts);
}

// ---- events ----
async function loadEvents() {
  if ($('view-events').hidden) return;
  const failed = $('failed-only').checked ? '&failed=true' : '';
  try {
    state.events = (await api('GET', `/events?limit=50${failed}`)).events;
    renderEvents();
  } catch (e) {
    notice(e.message);
  }
}

function renderEvents() {
  $('no-events').hidden = state.events.length > 0;
  $('event-rows').replaceChildren(...state.events.map((e) => {
    const failed = e.deliveries.some((d) => d.state === 'failed');
    const deliveries = e.deliveries.length
      ? e.deliveries.map((d) => el('span', {
        class: d.state === 'failed' ? 'err' : d.state === 'pending' ? 'why' : '',
        text: `${d.action} (${d.kind}): ${d.state}, ${d.attempts} attempt${d.attempts === 1 ? '' : 's'}`
          + (d.last_error ? ` — ${d.last_error}` : ''),
      }))
      : [el('span', { text: 'no action' })];
    const transfer = e.transfer_id ? el('code', { text: e.transfer_id }) : '';
    return el('tr', { 'data-event': e.id, class: failed ? 'failed' : '' },
      el('td', { 'data-label': 'When', text: when(e.created_at) }),
      el('td', { 'data-label': 'Event', text: e.event }),
      el('td', { 'data-label': 'Rule', text: e.rule || '' }),
      el('td', { 'data-label': 'Transfer' }, transfer),
      el('td', { 'data-label': 'Deliveries' }, ...deliveries.flatMap((d) => [d, el('br')])),
      el('td', { 'data-label': 'Actions' }, failed ? el('button', {
        type: 'button', 'data-action': 'retry-event', text: 'Retry',
        onclick: async () => { if (await act('POST', `/events/${encodeURIComponent(e.id)}/retry`)) loadEvents(); },
      }) : ''));
  }));
}

// ---- live stream ----
function connect() {
  const live = $('live');
  const source = new EventSource('/api/v1/stream');
  const on = (name, f) => source.addEventListener(name, (m) => f(JSON.parse(m.data)));
  source.onopen = () => { live.textContent = 'live'; live.className = 'up'; };
  source.onerror = () => {
    live.textContent = 'reconnecting…';
    live.className = 'down';
    // A session that ended shows as an error of the stream: find out, and log in again.
    api('GET', '/bandwidth').catch(() => {});
  };
  on('transfer', (t) => {
    state.transfers.set(idOf(t), t);
    scheduleTransfers();
    if (state.detail && state.detail.id === idOf(t)) loadDetail();
  });
  on('removed', (r) => { state.transfers.delete(r.id); scheduleTransfers(); });
  on('synced', () => { state.synced = true; scheduleTransfers(); });
  on('automations', (a) => { state.automations = a; renderAutomations(); });
  on('bandwidth', (b) => { state.bandwidth = b; renderLimits(); });
  on('rate', (s) => {
    state.samples.push(s);
    if (state.samples.length > 3700) state.samples.splice(0, state.samples.length - 3600);
    drawChart();
  });
  on('events', () => loadEvents());
}

async function start() {
  $('logout').hidden = !csrf();
  $('logout').addEventListener('click', async () => {
    await fetch('/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf() } });
    location.assign('/login');
  });
  $('filter').addEventListener('change', (e) => { state.filter = e.target.value; state.page = 0; scheduleTransfers(); });
  $('prev').addEventListener('click', () => { state.page = Math.max(0, state.page - 1); scheduleTransfers(); });
  $('next').addEventListener('click', () => { state.page += 1; scheduleTransfers(); });
  $('failed-only').addEventListener('change', loadEvents);
  window.addEventListener('hashchange', route);
  route();
  try {
    state.samples = (await api('GET', '/throughput')).samples;
    drawChart();
  } catch (e) {
    notice(e.message);
  }
  connect();
}

start();
