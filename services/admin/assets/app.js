// herd admin dashboard: plain DOM + inline SVG, no libraries. Talks to /admin/v1/* with a bearer key
// kept in sessionStorage. Charts mark their container data-ready="1" once drawn (used by the tests).
'use strict';

const API = '/admin/v1';
const KEY_STORE = 'herd-admin-key';
const SVGNS = 'http://www.w3.org/2000/svg';
const CHARTS = { volume: 'chart-volume', latency: 'chart-latency', policy: 'chart-policy', model: 'chart-experts', delivery: 'chart-delivery' };

let CW = 420; // width of the chart being drawn, so SVG text renders at about its nominal size
const state = { key: null, role: null, signedIn: false, session: 0, gen: 0, packs: [], sourceToken: 0, resultSeq: 0 };
const $ = (sel) => document.querySelector(sel);

// ---------- DOM helpers ----------
function build(node, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    node.append(typeof kid === 'object' ? kid : String(kid));
  }
  return node;
}
const el = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
const sv = (tag, attrs, ...kids) => build(document.createElementNS(SVGNS, tag), attrs, kids);

const nf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const fmt = (n) => (n === null || n === undefined || Number.isNaN(Number(n)) ? '–' : nf.format(Number(n)));
const pct = (x) => (x === null || x === undefined ? '–' : `${(Number(x) * 100).toFixed(1)}%`);
const shortDay = (d) => String(d).slice(5);

function table(head, rows) {
  return el('table', { class: 'data' },
    el('thead', {}, el('tr', {}, head.map((h) => el('th', { text: h })))),
    el('tbody', {}, rows.length ? rows.map((r) => el('tr', {}, r.map((c) => (c instanceof Node ? el('td', {}, c) : el('td', { text: c })))))
      : el('tr', {}, el('td', { colspan: head.length, class: 'muted', text: 'no data' }))));
}
const stat = (label, value) => el('div', { class: 'stat' }, el('span', { class: 'v', text: value }), el('span', { class: 'l', text: label }));
const legend = (series) => el('div', { class: 'legend' }, series.map((s) => el('span', {}, el('i', { class: s.cls }), s.name)));

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Vertical grouped bars: labels on x, one bar per series per label.
function vbars(labels, series, { height = 170, yfmt = fmt } = {}) {
  const W = CW, L = 40, B = 18, T = 6, plotW = W - L - 4, plotH = height - B - T;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.map((v) => Number(v) || 0))));
  const svg = sv('svg', { viewBox: `0 0 ${W} ${height}`, class: 'chart-svg', role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const y = T + plotH - (plotH * i) / 4;
    svg.append(sv('line', { x1: L, x2: W - 4, y1: y, y2: y, class: 'gridline' }),
      sv('text', { x: L - 4, y: y + 3, class: 'axis', 'text-anchor': 'end' }, yfmt((max * i) / 4)));
  }
  const n = Math.max(labels.length, 1), gw = plotW / n, bw = Math.max(1, (gw * 0.8) / series.length);
  const every = Math.ceil(n / Math.max(2, Math.floor(plotW / 42)));
  labels.forEach((lab, i) => {
    series.forEach((s, j) => {
      const v = Number(s.values[i]) || 0, h = (plotH * v) / max;
      svg.append(sv('rect', { x: L + i * gw + gw * 0.1 + j * bw, y: T + plotH - h, width: bw, height: h, class: s.cls },
        sv('title', {}, `${lab} ${s.name}: ${fmt(v)}`)));
    });
    if (i % every === 0) svg.append(sv('text', { x: L + i * gw + gw / 2, y: height - 4, class: 'axis', 'text-anchor': 'middle' }, shortDay(lab)));
  });
  return el('div', {}, svg, series.length > 1 ? legend(series) : null);
}

// Horizontal bars: one row per item, scaled to `max` (default: largest value).
function hbars(rows, { max, vfmt = fmt } = {}) {
  const W = CW, RH = 22, L = Math.min(150, Math.round(W * 0.28)), R = 96;
  const top = max || Math.max(1, ...rows.map((r) => Number(r.value) || 0));
  const svg = sv('svg', { viewBox: `0 0 ${W} ${rows.length * RH + 4}`, class: 'chart-svg', role: 'img' });
  rows.forEach((r, i) => {
    const y = i * RH + 2, w = ((W - L - R) * (Number(r.value) || 0)) / top;
    svg.append(sv('text', { x: L - 6, y: y + 14, class: 'label', 'text-anchor': 'end' }, r.label),
      sv('rect', { x: L, y: y + 3, width: Math.max(w, 0), height: RH - 7, class: r.cls || 's-a' }, sv('title', {}, `${r.label}: ${vfmt(r.value)}`)),
      sv('text', { x: L + w + 5, y: y + 14, class: 'label' }, r.note || vfmt(r.value)));
  });
  return rows.length ? svg : el('p', { class: 'muted', text: 'no data' });
}

// Fill missing days in [from, to] so gaps show as zero bars.
function fillDays(days, from, to) {
  const by = new Map((days || []).map((d) => [d.day, d]));
  const out = [];
  const end = new Date(`${to}T00:00:00Z`);
  for (let d = new Date(`${from}T00:00:00Z`); d <= end && out.length < 400; d.setUTCDate(d.getUTCDate() + 1)) {
    const k = d.toISOString().slice(0, 10);
    out.push(by.get(k) || { day: k });
  }
  for (const d of days || []) if (!out.some((o) => o.day === d.day)) out.push(d);
  return out.sort((a, b) => (a.day < b.day ? -1 : 1));
}

// ---------- API ----------
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  const init = { method, headers };
  if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  let res;
  try { res = await fetch(API + path, init); } catch (e) { return { status: 0, ok: false, data: { error: `network error: ${e.message}` } }; }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = res.ok ? text : { error: text.slice(0, 300) }; }
  if (res.status === 401 && state.signedIn) signOut('Your key was rejected (401); sign in again.');
  return { status: res.status, ok: res.ok, data };
}

function errText(r) {
  const d = (r.data && typeof r.data === 'object') ? r.data : {};
  let s = r.status ? `HTTP ${r.status}` : 'request failed';
  if (d.error) s += `: ${typeof d.error === 'object' ? JSON.stringify(d.error) : d.error}`;
  if (d.field) s += ` (field: ${d.field}${d.line ? `, line ${d.line}` : ''})`;
  return s;
}

function query(extra) {
  const p = new URLSearchParams({ from: $('#from').value, to: $('#to').value });
  if ($('#tenant').value && !$('#tenant-field').hidden) p.set('tenant_id', $('#tenant').value);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
}

// ---------- sign-in ----------
async function signIn(key, quiet) {
  state.key = key;
  const session = state.session;
  const r = await api('GET', '/whoami');
  if (session !== state.session) return;
  if (!r.ok || !r.data || !r.data.role) {
    state.key = null;
    sessionStorage.removeItem(KEY_STORE);
    if (!quiet) $('#sign-in-error').textContent = r.status === 401 ? 'That key was not accepted (401).' : errText(r);
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  Object.assign(state, { role: r.data.role, signedIn: true });
  $('#sign-in-error').textContent = '';
  $('#key').value = '';
  $('#who-name').textContent = r.data.name || `key ${r.data.key_id}`;
  $('#role').textContent = r.data.role;
  $('#who').hidden = false;
  $('#signin').hidden = true;
  $('#app').hidden = false;
  const admin = r.data.role === 'admin';
  $('#policy').hidden = !admin;
  $('#audit').hidden = !admin;
  await loadTenants();
  if (session !== state.session) return;
  loadCharts();
  if (admin) { loadPacks(); loadAudit(); }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  Object.assign(state, { key: null, role: null, signedIn: false, packs: [] });
  state.session++;
  state.gen++;
  state.sourceToken++;
  for (const id of Object.values(CHARTS)) { const c = document.getElementById(id); c.replaceChildren(); c.removeAttribute('data-ready'); c.removeAttribute('data-error'); }
  for (const sel of ['#pack', '#version', '#audit-table', '#tenant-ids']) $(sel).replaceChildren();
  $('#tenant').replaceChildren(el('option', { value: '', text: 'All tenants' }));
  $('#pack-source').value = '';
  $('#pack-source').removeAttribute('data-loaded');
  result('', 'idle');
  $('#app').hidden = true;
  $('#who').hidden = true;
  $('#policy').hidden = true;
  $('#audit').hidden = true;
  $('#signin').hidden = false;
  $('#sign-in-error').textContent = message || '';
  $('#key').focus();
}

async function loadTenants() {
  const session = state.session;
  const r = await api('GET', '/tenants');
  if (session !== state.session) return;
  const field = $('#tenant-field');
  if (!r.ok || !Array.isArray(r.data)) { field.hidden = true; return; }
  field.hidden = false;
  const opts = r.data.map((t) => el('option', { value: t.id, text: `${t.name} (#${t.id})` }));
  $('#tenant').replaceChildren(el('option', { value: '', text: 'All tenants' }), ...opts);
  $('#tenant-ids').replaceChildren(...r.data.map((t) => el('option', { value: t.id, text: t.name })));
  if (!$('#dry-tenant').value && r.data.length) $('#dry-tenant').value = r.data[0].id;
}

// ---------- charts ----------
function loadCharts() {
  const from = $('#from').value, to = $('#to').value;
  if (!from || !to || from > to) { $('#filter-error').textContent = 'Choose a valid date range (from ≤ to).'; return; }
  $('#filter-error').textContent = '';
  const gen = ++state.gen;
  for (const [name, id] of Object.entries(CHARTS)) {
    const box = document.getElementById(id);
    box.removeAttribute('data-ready');
    box.removeAttribute('data-error');
    box.classList.add('loading');
    api('GET', `/analytics/${name}?${query()}`).then((r) => {
      if (gen !== state.gen) return;
      box.classList.remove('loading');
      if (!r.ok || !r.data || typeof r.data !== 'object') {
        box.replaceChildren(el('p', { class: 'error', text: errText(r) }));
        box.setAttribute('data-error', errText(r));
        return;
      }
      try {
        CW = Math.max(280, Math.round(box.clientWidth) || 420);
        box.replaceChildren(...DRAW[name](r.data, from, to));
        box.setAttribute('data-ready', '1');
      } catch (e) {
        box.replaceChildren(el('p', { class: 'error', text: `could not draw: ${e.message}` }));
        box.setAttribute('data-error', e.message);
      }
    });
  }
}

const DRAW = {
  volume(d, from, to) {
    const days = fillDays(d.days, from, to);
    const totalIn = (d.days || []).reduce((a, x) => a + (Number(x.messages_in) || 0), 0);
    const totalOut = (d.days || []).reduce((a, x) => a + (Number(x.messages_out) || 0), 0);
    const au = d.active_users || {};
    return [
      el('div', { class: 'stats' }, el('div', { class: 'stat', 'data-total-in': totalIn }, el('span', { class: 'v', text: fmt(totalIn) }), el('span', { class: 'l', text: 'messages in' })),
        stat('messages out', fmt(totalOut)), stat('conversations', fmt(days.reduce((a, x) => a + (Number(x.conversations) || 0), 0)))),
      el('h3', { text: 'Messages per day' }),
      vbars(days.map((x) => x.day), [
        { name: 'in', cls: 's-in', values: days.map((x) => x.messages_in) },
        { name: 'out', cls: 's-out', values: days.map((x) => x.messages_out) }]),
      el('h3', { text: 'Active users' }),
      el('div', { class: 'stats' }, stat('daily', fmt(au.day)), stat('weekly', fmt(au.week)), stat('monthly', fmt(au.month))),
      vbars(days.map((x) => x.day), [{ name: 'active users', cls: 's-users', values: days.map((x) => x.active_users) }], { height: 110 }),
      el('div', { class: 'two' },
        table(['channel', 'platform', 'in', 'out'], (d.by_channel || []).map((c) => [`#${c.channel_id}`, c.platform, fmt(c.messages_in), fmt(c.messages_out)])),
        table(['country', 'in', 'users'], (d.by_country || []).map((c) => [c.country || '?', fmt(c.messages_in), fmt(c.active_users)]))),
    ];
  },

  latency(d, from, to) {
    const metrics = d.metrics || [];
    const max = niceMax(Math.max(1, ...metrics.map((m) => Number(m.p99) || 0)));
    const bars = (m) => {
      const svg = sv('svg', { viewBox: '0 0 120 24', class: 'mini', role: 'img' });
      [['p50', 's-p50'], ['p95', 's-p95'], ['p99', 's-p99']].forEach(([k, cls], i) => svg.append(
        sv('rect', { x: 0, y: i * 8 + 1, width: (118 * (Number(m[k]) || 0)) / max, height: 6, class: cls }, sv('title', {}, `${k}: ${fmt(m[k])} ms`))));
      return svg;
    };
    const out = [table(['stage', 'count', 'p50 ms', 'p95 ms', 'p99 ms', ''],
      metrics.map((m) => [m.metric.replace(/_ms$/, ''), fmt(m.count), fmt(m.p50), fmt(m.p95), fmt(m.p99), bars(m)])),
    legend([{ name: 'p50', cls: 's-p50' }, { name: 'p95', cls: 's-p95' }, { name: 'p99', cls: 's-p99' }])];
    const e2e = (d.days || []).filter((x) => x.metric === 'end_to_end_ms');
    if (e2e.length) {
      const days = fillDays(e2e, from, to);
      out.push(el('h3', { text: 'End-to-end per day (ms)' }), vbars(days.map((x) => x.day),
        ['p50', 'p95', 'p99'].map((k) => ({ name: k, cls: `s-${k}`, values: days.map((x) => x[k]) })), { height: 130 }));
    }
    return out;
  },

  policy(d, from, to) {
    const days = fillDays(d.days, from, to);
    const refusals = (d.refusals_by_category || []).slice().sort((a, b) => b.count - a.count);
    return [
      el('div', { class: 'stats' }, stat('replies', fmt(d.replies)), stat('balanced share', pct(d.balanced_share)),
        stat('refusals', fmt(refusals.reduce((a, x) => a + (Number(x.count) || 0), 0))),
        Object.assign(stat('crisis support', fmt(d.support)), { id: 'support-total' })),
      hbars([{ label: 'balanced', value: d.balanced_share || 0, cls: 's-balanced', note: pct(d.balanced_share) }], { max: 1, vfmt: pct }),
      el('h3', { text: 'Refusals by category' }),
      hbars(refusals.map((r) => ({ label: r.name ? `${r.category} · ${r.name}` : r.category, value: r.count, cls: 's-refuse' }))),
      el('h3', { text: 'Outcomes per day' }),
      vbars(days.map((x) => x.day), [
        { name: 'refusals', cls: 's-refuse', values: days.map((x) => x.refusals) },
        { name: 'crisis support', cls: 's-support', values: days.map((x) => x.support) },
        { name: 'balanced', cls: 's-balanced', values: days.map((x) => x.balanced) },
        { name: 'blocks', cls: 's-block', values: days.map((x) => x.blocks) }], { height: 130 }),
      el('div', { class: 'two' },
        table(['country', 'action', 'count'], (d.blocks_by_country || []).map((b) => [b.country, b.action, fmt(b.count)])),
        table(['shadow rule', 'action', 'count'], (d.shadow || []).map((s) => [`${s.pack}/${s.rule}`, s.action, fmt(s.count)]))),
    ];
  },

  model(d, from, to) {
    const days = fillDays(d.days, from, to);
    return [
      el('div', { class: 'stats' }, stat('tokens in', fmt(d.tokens_in)), stat('tokens out', fmt(d.tokens_out)), stat('tokens/s', fmt(d.tokens_per_s))),
      el('h3', { text: 'Generation speed per day (tokens/s)' }),
      vbars(days.map((x) => x.day), [{ name: 'tokens/s', cls: 's-tps', values: days.map((x) => x.tokens_per_s) }], { height: 110 }),
      el('h3', { text: 'Expert utilisation (share of each layer’s tokens)' }),
      heatmap(d.experts || []),
    ];
  },

  delivery(d) {
    const sent = Number(d.sent) || 0;
    const share = (v) => (sent ? ` (${((100 * (Number(v) || 0)) / sent).toFixed(1)}%)` : '');
    return [
      hbars([['sent', 's-sent'], ['delivered', 's-delivered'], ['read', 's-read'], ['failed', 's-failed']]
        .map(([k, cls]) => ({ label: k, value: d[k] || 0, cls, note: fmt(d[k] || 0) + share(d[k]) })), { max: Math.max(1, sent) }),
      el('h3', { text: 'Failures' }),
      table(['code', 'title', 'count'], (d.failures || []).map((f) => [String(f.code), f.title || '', fmt(f.count)])),
    ];
  },
};

function heatmap(experts) {
  const rows = experts.map((r) => ({ layer: r.layer, counts: r.counts || [] })).sort((a, b) => a.layer - b.layer);
  const cols = Math.max(0, ...rows.map((r) => (r.counts || []).length));
  if (!rows.length || !cols) return el('p', { class: 'muted', text: 'no expert counts' });
  const shares = rows.map((r) => { const t = r.counts.reduce((a, c) => a + (Number(c) || 0), 0); return r.counts.map((c) => (t ? (Number(c) || 0) / t : 0)); });
  const maxShare = Math.max(1e-9, ...shares.flat());
  const L = 34, T = 14, cw = Math.max(3, Math.min(28, (CW - L - 2) / cols)), ch = Math.max(4, Math.min(18, 360 / rows.length));
  const W = L + cols * cw + 2, H = T + rows.length * ch + 2;
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, class: 'heat', role: 'img' });
  svg.style.maxWidth = `${Math.max(W, 320)}px`; // CSSOM, not a style attribute: allowed by a strict CSP
  const colEvery = Math.ceil(cols / Math.max(2, Math.floor((cols * cw) / 22))), rowEvery = Math.ceil(rows.length / 16);
  for (let e = 0; e < cols; e += colEvery) svg.append(sv('text', { x: L + e * cw + cw / 2, y: T - 4, class: 'axis', 'text-anchor': 'middle' }, e));
  rows.forEach((r, i) => {
    const y = T + i * ch;
    if (i % rowEvery === 0) svg.append(sv('text', { x: L - 4, y: y + ch / 2 + 3, class: 'axis', 'text-anchor': 'end' }, `L${r.layer}`));
    shares[i].forEach((s, e) => svg.append(sv('rect', { x: L + e * cw, y, width: cw, height: ch, fill: heatColour(s / maxShare) },
      sv('title', {}, `layer ${r.layer}, expert ${e}: ${fmt(r.counts[e])} tokens (${pct(s)})`))));
  });
  const key = el('div', { class: 'heat-key' }, el('span', { text: '0%' }), el('i', { class: 'ramp' }), el('span', { text: pct(maxShare) }),
    el('span', { class: 'muted', text: ` · ${rows.length} layers × ${cols} experts; uniform would be ${pct(1 / cols)}` }));
  return el('div', {}, svg, key);
}
const heatColour = (t) => `hsl(${220 - 200 * t}, 75%, ${96 - 50 * t}%)`;

async function downloadCsv(name, table, link) {
  const extra = table ? { format: 'csv', table } : { format: 'csv' };
  const res = await fetch(`${API}/analytics/${name}?${query(extra)}`, { headers: { Authorization: `Bearer ${state.key}` } })
    .catch((e) => ({ ok: false, status: 0, text: async () => e.message }));
  if (!res.ok) { link.title = `CSV failed: HTTP ${res.status}`; link.classList.add('failed'); return; }
  link.classList.remove('failed');
  const url = URL.createObjectURL(new Blob([await res.blob()], { type: 'text/csv' }));
  const a = el('a', { href: url, download: `herd-${name}${table ? `-${table}` : ''}-${$('#from').value}_${$('#to').value}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---------- policy editor ----------
function result(text, status, attrs) {
  const box = $('#policy-result');
  box.textContent = text;
  box.dataset.status = status;
  box.dataset.seq = String(++state.resultSeq);
  for (const k of ['field', 'action']) delete box.dataset[k];
  Object.assign(box.dataset, attrs || {});
}
const selectedPack = () => $('#pack').value;
const selectedVersion = () => $('#version').value;

async function loadPacks(keep) {
  const session = state.session;
  const r = await api('GET', '/packs');
  if (session !== state.session) return;
  if (!r.ok || !Array.isArray(r.data)) { result(`could not load packs: ${errText(r)}`, 'error'); return; }
  state.packs = r.data;
  const current = keep ? keep.name : selectedPack();
  $('#pack').replaceChildren(...r.data.map((p) => el('option', { value: p.name, text: p.name })));
  if (current && r.data.some((p) => p.name === current)) $('#pack').value = current;
  fillVersions(keep ? keep.version : undefined);
}

// Fill the version selector for the selected pack; select `want`, else the active one; load its source.
function fillVersions(want) {
  const pack = state.packs.find((p) => p.name === selectedPack());
  const versions = pack ? (pack.versions || []).slice().sort((a, b) => b.version - a.version) : [];
  $('#version').replaceChildren(...versions.map((v) => el('option', { value: v.version,
    text: `v${v.version}${v.active ? ' (active)' : ''}${v.created_at ? ` · ${String(v.created_at).slice(0, 16).replace('T', ' ')}` : ''}` })));
  const target = want !== undefined ? want : pack && pack.active_version;
  if (target !== undefined && target !== null && versions.some((v) => String(v.version) === String(target))) $('#version').value = String(target);
  // Keep unsaved edits when the selection did not change (e.g. after activate or rollback).
  if ($('#pack-source').dataset.loaded !== `${selectedPack()}@${selectedVersion()}`) loadSource();
}

async function loadSource() {
  const name = selectedPack(), version = selectedVersion();
  const token = ++state.sourceToken;
  const ta = $('#pack-source');
  ta.removeAttribute('data-loaded');
  if (!name || !version) { ta.value = ''; return; }
  const r = await api('GET', `/packs/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}`);
  if (token !== state.sourceToken) return;
  if (!r.ok || !r.data) { result(`could not load ${name} v${version}: ${errText(r)}`, 'error'); return; }
  ta.value = r.data.source || '';
  ta.dataset.loaded = `${name}@${version}`;
}

async function policyAction(button, fn) {
  const buttons = document.querySelectorAll('#policy button');
  result(`${button.textContent}…`, 'busy');
  buttons.forEach((b) => { b.disabled = true; });
  try { await fn(); } catch (e) { result(`error: ${e.message}`, 'error'); } finally { buttons.forEach((b) => { b.disabled = false; }); }
}

function describeError(r) {
  const d = r.data && typeof r.data === 'object' ? r.data : {};
  return [errText(r), d.field ? { field: d.field } : {}];
}

async function doValidate() {
  const r = await api('POST', '/packs/validate', { source: $('#pack-source').value });
  if (!r.ok) { const [t, a] = describeError(r); return result(t, 'error', a); }
  if (r.data && r.data.valid) return result(`valid — ${r.data.name} v${r.data.version}`, 'ok');
  const e = (r.data && r.data.error) || {};
  const where = [e.field ? `field ${e.field}` : '', e.line ? `line ${e.line}` : ''].filter(Boolean).join(', ');
  result(`invalid${where ? ` (${where})` : ''}: ${e.message || JSON.stringify(e)}`, 'invalid', e.field ? { field: e.field } : {});
}

async function doDryRun() {
  const name = selectedPack(), version = selectedVersion();
  const tenant = Number($('#dry-tenant').value);
  if (!name || !version) return result('choose a pack and a version first', 'error');
  if (!Number.isInteger(tenant) || tenant < 1) return result('enter a tenant id for the dry run', 'error', { field: 'tenant_id' });
  const r = await api('POST', `/packs/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/dry-run`,
    { tenant_id: tenant, text: $('#dry-text').value, platform: $('#dry-platform').value, sender: $('#dry-sender').value });
  if (!r.ok) { const [t, a] = describeError(r); return result(t, 'error', a); }
  const d = r.data || {};
  const lines = [`action: ${d.action}`];
  if (d.country) lines.push(`country: ${d.country}`);
  if (d.message) lines.push(`message: ${d.message}`);
  if (d.system_prompt) lines.push(`system prompt: ${d.system_prompt}`);
  const hits = d.hits || [];
  lines.push(`hits: ${hits.length ? '' : 'none'}`);
  for (const h of hits) lines.push(`  ${h.pack} v${h.version} · ${h.rule} → ${h.action}${h.category ? ` [${h.category}]` : ''}${h.shadow ? ' (shadow)' : ''}`);
  result(lines.join('\n'), 'ok', { action: d.action || '' });
}

async function doSave() {
  const name = selectedPack();
  if (!name) return result('choose a pack first', 'error');
  const r = await api('POST', `/packs/${encodeURIComponent(name)}/versions`, { source: $('#pack-source').value });
  if (!r.ok) { const [t, a] = describeError(r); return result(t, 'error', a); }
  await loadPacks({ name: r.data.name, version: r.data.version });
  loadAudit();
  result(`saved ${r.data.name} v${r.data.version} (not active yet — activate it to use it)`, 'ok');
}

async function doActivate() {
  const name = selectedPack(), version = selectedVersion();
  if (!name || !version) return result('choose a pack and a version first', 'error');
  const r = await api('POST', `/packs/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/activate`);
  if (!r.ok) { const [t, a] = describeError(r); return result(t, 'error', a); }
  await loadPacks({ name: r.data.name, version: r.data.version });
  loadAudit();
  result(`activated ${r.data.name} v${r.data.version}`, 'ok');
}

async function doRollback() {
  const name = selectedPack();
  if (!name) return result('choose a pack first', 'error');
  const r = await api('POST', `/packs/${encodeURIComponent(name)}/rollback`);
  if (!r.ok) { const [t, a] = describeError(r); return result(t, 'error', a); }
  await loadPacks({ name: r.data.name, version: r.data.version });
  loadAudit();
  result(`rolled back ${r.data.name}: v${r.data.version} is now active`, 'ok');
}

// ---------- audit ----------
async function loadAudit() {
  if (state.role !== 'admin') return;
  const session = state.session;
  const r = await api('GET', '/audit?limit=50');
  if (session !== state.session) return;
  const t = $('#audit-table');
  if (!r.ok || !Array.isArray(r.data)) { t.replaceChildren(el('caption', { class: 'error', text: errText(r) })); return; }
  const change = (a) => {
    if (a.before == null && a.after == null) return '';
    return el('details', {}, el('summary', { text: 'change' }),
      el('pre', { text: `before: ${JSON.stringify(a.before, null, 1)}\nafter: ${JSON.stringify(a.after, null, 1)}` }));
  };
  t.replaceWith(Object.assign(table(['when', 'actor', 'action', 'target', ''], r.data.map((a) => [
    String(a.created_at || '').replace('T', ' ').slice(0, 19), a.actor || `key ${a.actor_key_id}`, a.action,
    `${a.target_type || ''}${a.target_id != null ? ` ${a.target_id}` : ''}`, change(a)])), { id: 'audit-table' }));
}

// ---------- wiring ----------
function isoDay(d) { return d.toISOString().slice(0, 10); }

function init() {
  const today = new Date();
  const weekAgo = new Date(today.getTime() - 6 * 86400000);
  $('#from').value = isoDay(weekAgo);
  $('#to').value = isoDay(today);
  $('#dry-text').value = 'What do you think about abortion?';

  $('#sign-in-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('#key').value.trim();
    if (!key) { $('#sign-in-error').textContent = 'Enter a key.'; return; }
    $('#sign-in-error').textContent = '';
    signIn(key);
  });
  $('#sign-out').addEventListener('click', () => signOut());
  for (const id of ['#from', '#to', '#tenant']) $(id).addEventListener('change', loadCharts);
  $('#refresh').addEventListener('click', loadCharts);
  for (const a of document.querySelectorAll('a.csv')) a.addEventListener('click', (e) => { e.preventDefault(); downloadCsv(a.dataset.csv, a.dataset.table, a); });

  $('#pack').addEventListener('change', () => fillVersions());
  $('#version').addEventListener('change', loadSource);
  $('#validate').addEventListener('click', (e) => policyAction(e.target, doValidate));
  $('#dry-run').addEventListener('click', (e) => policyAction(e.target, doDryRun));
  $('#save').addEventListener('click', (e) => policyAction(e.target, doSave));
  $('#activate').addEventListener('click', (e) => policyAction(e.target, doActivate));
  $('#rollback').addEventListener('click', (e) => policyAction(e.target, doRollback));
  $('#audit-refresh').addEventListener('click', loadAudit);

  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) signIn(saved, true); else $('#key').focus();
}

init();
