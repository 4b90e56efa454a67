// Ferry's dashboard: polls the admin API every 2 s and redraws what changed. No framework
// and nothing from elsewhere: the ferry binary serves this file. Pages: `#/` (services,
// events, configuration) and `#/services/NAME` (one service). Every value from the API is
// put in the page as text, never as markup.
'use strict';

const POLL_MS = 2000;
const WINDOW_MS = 15 * 60 * 1000;
// The charts' time axis spans the history there is, from 1 minute up to the 15 kept, so a
// service just moved to the mesh does not show as a dot at the right edge.
const MIN_SPAN_MS = 60 * 1000;
const STATUSES = ['UP', 'DOWN', 'OUT_OF_SERVICE', 'STARTING', 'UNKNOWN'];
const SOURCES = [['eureka', 'Eureka'], ['consul', 'Consul'], ['synced', 'synced']];

const state = {
  services: [], traffic: new Map(), trafficNow: 0, trafficSpan: MIN_SPAN_MS, events: [], latest: 0, eventsMissing: false,
  store: null, config: null, kv: null, kvPrefix: 'config/', detail: null, totals: null,
  lastOk: 0, error: null, polls: 0, drawn: '',
};

// === DOM helpers ===

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (selector) => document.querySelector(selector);

// === formatting ===

function rate(value) {
  if (value === null || value === undefined) return '–';
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function percent(value) {
  if (value === null || value === undefined) return '–';
  return (value * 100).toFixed(value >= 0.9995 ? 0 : 1) + '%';
}

function millis(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1) return value.toFixed(2) + ' ms';
  if (value < 100) return value.toFixed(1) + ' ms';
  if (value < 10000) return value.toFixed(0) + ' ms';
  return (value / 1000).toFixed(1) + ' s';
}

function ago(ms) {
  if (!ms) return '–';
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return seconds + ' s ago';
  if (seconds < 3600) return Math.round(seconds / 60) + ' min ago';
  return Math.round(seconds / 3600) + ' h ago';
}

function clock(ms) {
  const at = new Date(ms);
  return at.toLocaleTimeString([], { hour12: false }) + '.' + String(at.getMilliseconds()).padStart(3, '0');
}

// === data ===

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!response.ok) {
    const error = new Error(`${url}: ${response.status} ${(await response.text()).trim()}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function route() {
  const match = location.hash.match(/^#\/services\/(.+)$/);
  return match ? { service: decodeURIComponent(match[1]).toUpperCase() } : { service: null };
}

async function poll() {
  const { service } = route();
  try {
    const jobs = [getJSON('/api/services'), getJSON('/api/traffic'), getJSON('/api/store'), pollEvents()];
    if (service) {
      const name = encodeURIComponent(service);
      jobs.push(getJSON(`/api/services/${name}`), getJSON(`/api/traffic?service=${name}`));
    }
    // Configuration changes rarely: every fifth poll, and on the first.
    if (state.polls % 5 === 0) jobs.push(pollConfig());
    const [services, traffic, store, , detail, detailTraffic] = await Promise.all(jobs);
    state.services = services;
    state.traffic = new Map(traffic.services.map((series) => [series.service, series]));
    state.trafficNow = Math.max(0, ...traffic.services.map((series) => series.at_ms.at(-1) || 0));
    const oldest = Math.min(state.trafficNow, ...traffic.services.map((series) => series.at_ms[0] || state.trafficNow));
    const interval = traffic.interval_seconds * 1000;
    state.trafficSpan = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, state.trafficNow - oldest + interval));
    state.store = store;
    state.detail = service ? detail : null;
    state.totals = service ? detailTraffic.totals : null;
    if (service) for (const series of detailTraffic.services) state.traffic.set(series.service, series);
    state.lastOk = Date.now();
    state.error = null;
  } catch (error) {
    state.error = String(error.message || error);
  }
  state.polls += 1;
  render();
}

async function pollEvents() {
  if (state.eventsMissing) return;
  let body;
  try {
    body = await getJSON(`/api/events?after=${state.latest}&limit=200`);
  } catch (error) {
    // A ferry without the event log: the rest of the page still works.
    if (error.status === 404) { state.eventsMissing = true; return; }
    throw error;
  }
  const known = new Set(state.events.map((event) => event.seq));
  const fresh = body.events.filter((event) => !known.has(event.seq));
  state.events = fresh.concat(state.events).sort((a, b) => b.seq - a.seq).slice(0, 300);
  state.latest = Math.max(state.latest, body.latest || 0);
}

async function pollConfig() {
  const [config, kv] = await Promise.all([
    getJSON('/api/config'),
    getJSON(`/api/kv?prefix=${encodeURIComponent(state.kvPrefix)}`),
  ]);
  state.config = config;
  state.kv = kv;
}

function schedule() {
  poll().finally(() => setTimeout(schedule, POLL_MS));
}

// === charts ===

// A chart of one or more series over the history kept: the x axis is time, so a gap
// in the data is a gap in the line. `lines` is [{values, cls}]; values may hold nulls.
function chart(times, lines, opts) {
  const { width, height, max: fixedMax, label, area } = opts;
  const top = label ? 14 : 3;
  const bottom = height - 3;
  const now = state.trafficNow || Date.now();
  const span = state.trafficSpan;
  const all = lines.flatMap((line) => line.values).filter((value) => value !== null && value !== undefined);
  const max = fixedMax || Math.max(...all, 0) * 1.15 || 1;
  const x = (at) => ((at - (now - span)) / span) * width;
  const y = (value) => bottom - (Math.min(value, max) / max) * (bottom - top);
  const root = svg('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });
  root.append(svg('line', { class: 'grid', x1: 0, x2: width, y1: bottom + 0.5, y2: bottom + 0.5 }));
  if (label) {
    root.append(svg('line', { class: 'grid', x1: 0, x2: width, y1: top + 0.5, y2: top + 0.5 }));
    root.append(svg('text', { x: 2, y: 10 }, label(max)));
    root.append(svg('text', { x: width - 2, y: 10, 'text-anchor': 'end' }, `${Math.round(span / 60000)} min to now`));
  }
  let points = 0;
  for (const line of lines) {
    let path = '';
    let segment = [];
    const flush = () => {
      if (segment.length === 1) segment.push([segment[0][0] + 2, segment[0][1]]);
      if (segment.length) path += segment.map(([px, py], at) => `${at ? 'L' : 'M'}${px.toFixed(1)} ${py.toFixed(1)}`).join('');
      if (area && segment.length) {
        const fill = `M${segment[0][0].toFixed(1)} ${bottom}` +
          segment.map(([px, py]) => `L${px.toFixed(1)} ${py.toFixed(1)}`).join('') +
          `L${segment.at(-1)[0].toFixed(1)} ${bottom}Z`;
        root.insertBefore(svg('path', { class: 'area', d: fill }), root.firstChild);
      }
      segment = [];
    };
    times.forEach((at, index) => {
      const value = line.values[index];
      if (value === null || value === undefined || x(at) < 0) { flush(); return; }
      segment.push([x(at), y(value)]);
      points += 1;
    });
    flush();
    if (path) root.append(svg('path', { class: `line ${line.cls || ''}`, d: path }));
  }
  root.setAttribute('data-points', points);
  return root;
}

// === views ===

function statusChips(instances) {
  const counts = {};
  for (const instance of instances) counts[instance.status] = (counts[instance.status] || 0) + 1;
  const ejected = instances.filter((instance) => instance.ejected).length;
  return [STATUSES.filter((status) => counts[status]).map((status) =>
    h('span', { class: `st st-${status}` }, `${counts[status]} ${status}`)),
  ejected ? h('span', { class: 'st st-ejected' }, `${ejected} ejected`) : ''];
}

function sourceText(instances) {
  const parts = SOURCES.map(([key, label]) => [label, instances.filter((i) => i.source === key).length])
    .filter(([, count]) => count > 0)
    .map(([label, count]) => `${label} ${count}`);
  return parts.length ? parts.join(' · ') : '–';
}

function modeBadge(mode) {
  return h('span', { class: `badge ${mode}`, 'data-mode': mode }, mode);
}

function card(label, value, key) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label),
    h('div', { class: 'value', 'data-figure': key }, value));
}

function overview() {
  const services = state.services;
  const inMesh = services.filter((service) => service.mode === 'mesh');
  const instances = services.flatMap((service) => service.instances);
  const up = instances.filter((instance) => instance.status === 'UP').length;
  const totalRate = inMesh.reduce((sum, service) =>
    sum + ((state.traffic.get(service.name) || {}).latest?.request_rate || 0), 0);
  const rows = services.map((service) => {
    const latest = (state.traffic.get(service.name) || {}).latest || null;
    const series = state.traffic.get(service.name);
    const open = () => { location.hash = `#/services/${encodeURIComponent(service.name)}`; };
    return h('tr', { class: 'link', 'data-service': service.name, onclick: open },
      h('td', {}, h('a', { class: 'name', href: `#/services/${encodeURIComponent(service.name)}` }, service.name)),
      h('td', {}, modeBadge(service.mode)),
      h('td', { class: 'num mono' }, service.port ?? '–'),
      h('td', {}, statusChips(service.instances)),
      h('td', { class: 'muted' }, sourceText(service.instances)),
      h('td', { class: 'num', 'data-figure': 'rate' }, latest ? rate(latest.request_rate) : '–'),
      h('td', { class: 'num' }, latest ? percent(latest.success_rate) : '–'),
      h('td', { class: 'num' }, latest ? millis(latest.p50_ms) : '–'),
      h('td', { class: 'num' }, latest ? millis(latest.p99_ms) : '–'),
      h('td', {}, series ? chart(series.at_ms, [{ values: series.request_rate }], { width: 130, height: 26, area: true }) : ''));
  });
  return [
    h('div', { class: 'cards' },
      card('Services', services.length, 'services'),
      card('In the mesh', inMesh.length, 'mesh'),
      card('Instances up', `${up} / ${instances.length}`, 'instances'),
      card('Mesh requests/s', rate(totalRate), 'total-rate')),
    h('section', { class: 'panel flush', id: 'services' },
      h('h2', {}, 'Services'),
      services.length ? h('table', {},
        h('thead', {}, h('tr', {}, ['Service', 'Mode'].map((name) => h('th', {}, name)), h('th', { class: 'num' }, 'Port'),
          ['Instances', 'Sources'].map((name) => h('th', {}, name)),
          ['Req/s', 'Success', 'p50', 'p99'].map((name) => h('th', { class: 'num' }, name)), h('th', {}, 'History'))),
        h('tbody', {}, rows)) : h('div', { class: 'empty' }, 'No service is registered yet.')),
    h('div', { class: 'grid2' },
      h('section', { class: 'panel flush', id: 'events' }, h('h2', {}, 'Events'), eventTable(state.events)),
      h('section', { class: 'panel', id: 'config' }, h('h2', {}, 'Configuration'), configView())),
  ];
}

function eventTable(events) {
  if (state.eventsMissing) return h('div', { class: 'empty' }, 'This ferry keeps no event log.');
  if (!events.length) return h('div', { class: 'empty' }, 'No events yet.');
  return h('div', { class: 'events' }, h('table', {}, h('tbody', {}, events.slice(0, 150).map((event) =>
    h('tr', { 'data-kind': event.kind },
      h('td', { class: 'mono muted', title: event.at }, clock(event.at_ms)),
      h('td', {}, h('span', { class: `ev ev-${event.kind}` }, event.kind)),
      h('td', {}, h('a', { href: `#/services/${encodeURIComponent(event.service)}` }, event.service),
        event.instance ? h('span', { class: 'muted' }, ` / ${event.instance}`) : ''),
      h('td', {}, event.detail || ''))))));
}

function configView() {
  const config = state.config;
  if (!config) return h('p', { class: 'muted' }, 'Loading…');
  const repository = config.repository;
  const kv = state.kv;
  const crumbs = [];
  let prefix = '';
  for (const part of state.kvPrefix.split('/').filter(Boolean)) {
    prefix += part + '/';
    const target = prefix;
    crumbs.push(h('a', { href: '#/', onclick: (event) => { event.preventDefault(); browse(target); } }, part + '/'));
  }
  return [
    h('table', {}, h('tbody', {},
      h('tr', {}, h('th', {}, 'Repository'), repository
        ? h('td', {}, h('div', { class: 'mono' }, repository.location),
          h('div', { class: 'muted' }, `${repository.kind}, label ${repository.label ?? '–'}`,
            repository.version ? `, version ${repository.version.slice(0, 12)}` : '',
            repository.error ? ` — ${repository.error}` : ''))
        : h('td', { class: 'muted' }, 'none (no --config-repo)')),
      h('tr', {}, h('th', {}, 'KV store'), h('td', {}, `${config.kv.backend}, index ${config.kv.index}, `,
        `${config.kv.contexts.length} context${config.kv.contexts.length === 1 ? '' : 's'} under `,
        h('span', { class: 'mono' }, config.kv.prefix))))),
    h('div', { class: 'crumbs' }, h('a', { href: '#/', onclick: (event) => { event.preventDefault(); browse(''); } }, 'KV /'), crumbs),
    kv && kv.keys.length ? h('table', { id: 'kv' }, h('tbody', {}, kv.keys.map((key) => h('tr', {},
      h('td', { class: 'mono' }, key.folder
        ? h('a', { href: '#/', onclick: (event) => { event.preventDefault(); browse(key.key); } }, key.key.slice(kv.prefix.length))
        : key.key.slice(kv.prefix.length)),
      h('td', { class: 'num muted' }, key.folder ? 'folder' : `${key.bytes} B`),
      h('td', { class: 'num muted' }, key.folder ? '' : `index ${key.modify_index}`)))))
      : h('p', { class: 'muted' }, 'No keys under this prefix.'),
  ];
}

function browse(prefix) {
  state.kvPrefix = prefix;
  getJSON(`/api/kv?prefix=${encodeURIComponent(prefix)}`)
    .then((kv) => { state.kv = kv; render(); })
    .catch((error) => { state.error = String(error.message || error); render(); });
}

function servicePage(name) {
  const detail = state.detail;
  if (!detail || detail.name !== name) return h('p', { class: 'muted' }, 'Loading…');
  const series = state.traffic.get(name);
  const latest = series ? series.latest : null;
  const toMesh = detail.mode !== 'mesh';
  const events = state.events.filter((event) => event.service === name);
  const totals = state.totals;
  const byEndpoint = new Map((totals ? totals.endpoints : []).map((endpoint) => [endpoint.id, endpoint]));
  const charts = series ? [
    ['Requests/s', [{ values: series.request_rate }], { area: true, label: (max) => rate(max) + '/s' }],
    ['Success rate', [{ values: series.success_rate, cls: 'ok' }], { max: 1, label: () => '100%' }],
    ['Latency', [{ values: series.p50_ms }, { values: series.p99_ms, cls: 'p99' }], { label: millis }],
  ] : [];
  return [
    h('div', { class: 'crumbs' }, h('a', { href: '#/' }, '← All services')),
    h('h1', {}, h('span', { id: 'service-name' }, name), modeBadge(detail.mode),
      detail.port ? h('span', { class: 'muted mono' }, `port ${detail.port}`) : '',
      h('span', { class: 'grow' }),
      h('button', { id: 'cutover', type: 'button', class: toMesh ? 'primary' : 'danger',
        onclick: () => askCutover(name, toMesh ? 'mesh' : 'legacy') }, toMesh ? 'Move to mesh' : 'Roll back')),
    h('div', { class: 'cards' },
      card('Requests/s', latest ? rate(latest.request_rate) : '–', 'rate'),
      card('Success', latest ? percent(latest.success_rate) : '–', 'success'),
      card('p50', latest ? millis(latest.p50_ms) : '–', 'p50'),
      card('p99', latest ? millis(latest.p99_ms) : '–', 'p99')),
    h('section', { class: 'panel', id: 'charts' },
      h('h2', {}, `Last ${Math.round(state.trafficSpan / 60000)} min`, h('span', { class: 'muted' }, ' — through the proxy, 10 s samples, 15 min kept')),
      charts.length ? h('div', { class: 'grid3' }, charts.map(([title, lines, opts]) =>
        h('div', { class: 'chart' }, h('h3', {}, title,
          title === 'Latency' ? h('span', { class: 'legend' }, ' ', h('span', { class: 'p50' }, 'p50'), ' / ', h('span', { class: 'p99' }, 'p99')) : ''),
        chart(series.at_ms, lines, { width: 400, height: 120, ...opts }))))
        : h('p', { class: 'muted' }, detail.mode === 'mesh' ? 'No traffic through the proxy yet.' : 'Traffic figures appear once the service is in the mesh and called.')),
    h('section', { class: 'panel flush', id: 'instances' },
      h('h2', {}, 'Instances'),
      h('table', {}, h('thead', {}, h('tr', {}, ['Instance', 'Address', 'Source', 'Status', 'Last renewal', 'Checks', 'Metadata'].map((title) => h('th', {}, title)),
        ['2xx', '4xx', '5xx', 'Ejections'].map((title) => h('th', { class: 'num' }, title)))),
      h('tbody', {}, detail.instances.map((instance) => {
        const traffic = byEndpoint.get(instance.id);
        return h('tr', { 'data-instance': instance.id },
          h('td', { class: 'mono' }, instance.id),
          h('td', { class: 'mono' }, instance.address),
          h('td', {}, instance.source === 'synced' ? `synced (${instance.owner || 'legacy'})` : (instance.source || '–')),
          h('td', {}, h('span', { class: `st st-${instance.status}` }, instance.status),
            instance.ejected ? h('span', { class: 'st st-ejected' }, 'ejected') : ''),
          h('td', { class: 'muted' }, instance.last_renewal_ms ? ago(instance.last_renewal_ms) : '–'),
          h('td', {}, (instance.checks || []).map((check) =>
            h('span', { class: `st st-${check.status}`, title: check.output || '' }, `${check.name}: ${check.status}`))),
          h('td', {}, Object.entries(instance.metadata || {}).map(([key, value]) => h('span', { class: 'kv mono' }, `${key}=${value}`))),
          h('td', { class: 'num' }, traffic ? traffic.responses['2xx'] : '–'),
          h('td', { class: 'num' }, traffic ? traffic.responses['4xx'] : '–'),
          h('td', { class: 'num' }, traffic ? traffic.responses['5xx'] : '–'),
          h('td', { class: 'num' }, traffic ? traffic.ejections : '–'));
      }))),
      totals ? h('div', { class: 'empty' }, `Since start: ${totals.requests} requests, ${totals.retries} retries, `,
        `${totals.proxy_errors} answered by the proxy itself, ${totals.open_connections} open connections.`) : ''),
    h('section', { class: 'panel flush', id: 'events' }, h('h2', {}, `Events of ${name}`), eventTable(events)),
  ];
}

// === cutover ===

let pending = null;

function askCutover(name, mode) {
  pending = { name, mode };
  const toMesh = mode === 'mesh';
  $('#confirm-title').textContent = toMesh ? `Move ${name} to the mesh?` : `Roll ${name} back to legacy?`;
  $('#confirm-text').textContent = toMesh
    ? `Ferry opens ${name}'s outbound listener and publishes its address for every ${name} instance, so callers reach ${name} through the proxy.`
    : `Ferry publishes ${name}'s real instance addresses again; the outbound listener keeps serving callers that have not refreshed yet.`;
  $('#confirm-delay').textContent = `${name}'s callers switch at their next registry refresh: up to about 65 s with ` +
    'Spring\'s defaults (Eureka clients refetch every 30 s, Spring Cloud LoadBalancer caches instances for 35 s).';
  $('#confirm-ok').textContent = toMesh ? 'Move to mesh' : 'Roll back';
  $('#confirm-ok').disabled = false;
  $('#confirm-error').hidden = true;
  $('#token-row').hidden = true;
  $('#confirm').showModal();
}

async function confirmCutover() {
  if (!pending) return;
  const { name, mode } = pending;
  const typed = $('#token-row').hidden ? '' : $('#token').value.trim();
  if (typed) sessionStorage.setItem('ferry-admin-token', typed);
  const token = typed || sessionStorage.getItem('ferry-admin-token');
  const button = $('#confirm-ok');
  button.disabled = true;
  let response;
  try {
    response = await fetch(`/api/services/${encodeURIComponent(name)}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ mode }),
    });
  } catch (error) {
    refuse(`Ferry did not answer: ${error.message || error}`, false);
    return;
  }
  const text = (await response.text()).trim();
  if (response.ok) {
    $('#confirm').close();
    pending = null;
    const moved = JSON.parse(text);
    toast(mode === 'mesh' ? `${name} is in the mesh (port ${moved.port}).` : `${name} is rolled back to legacy.`);
    poll();
    return;
  }
  const denied = response.status === 401 || response.status === 403;
  if (denied) sessionStorage.removeItem('ferry-admin-token');
  refuse(`Refused (${response.status}): ${text}`, denied);
}

function refuse(message, askToken) {
  const error = $('#confirm-error');
  error.textContent = message;
  error.hidden = false;
  if (askToken) {
    $('#token-row').hidden = false;
    $('#token').value = '';
    $('#token').focus();
    $('#confirm-ok').textContent = 'Retry with token';
  }
  $('#confirm-ok').disabled = false;
}

function toast(message) {
  const box = $('#toast');
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

// === drawing ===

function render() {
  const live = $('#live');
  live.classList.toggle('down', Boolean(state.error));
  live.textContent = state.error ? `not updating: ${state.error}` : `live, updated ${ago(state.lastOk)}`;
  if (state.store) {
    $('#node').textContent = state.store.node ? `node ${state.store.node}` : '';
    const store = $('#store');
    store.textContent = `store ${state.store.kind}${state.store.kind === 'etcd' ? (state.store.current ? ': current' : ': stale') : ''}`;
    store.classList.toggle('bad', state.store.current === false);
  }
  const { service } = route();
  // Redraw only when what the page shows changed, so a click or a selection survives polls.
  const drawn = JSON.stringify([service, state.services, [...state.traffic], state.events.length && state.events[0].seq,
    state.config, state.kv, state.detail, state.totals, state.eventsMissing]);
  if (drawn === state.drawn) return;
  state.drawn = drawn;
  const view = $('#view');
  const scroll = window.scrollY;
  view.replaceChildren(...[service ? servicePage(service) : overview()].flat());
  document.title = service ? `${service} · Ferry` : 'Ferry';
  window.scrollTo(0, scroll);
}

document.addEventListener('DOMContentLoaded', () => {
  $('#confirm-ok').addEventListener('click', confirmCutover);
  $('#confirm-cancel').addEventListener('click', () => { pending = null; $('#confirm').close(); });
  $('#token').addEventListener('keydown', (event) => { if (event.key === 'Enter') confirmCutover(); });
  window.addEventListener('hashchange', () => { state.drawn = ''; state.detail = null; render(); poll(); });
  setInterval(() => { if (state.lastOk && !state.error) $('#live').textContent = `live, updated ${ago(state.lastOk)}`; }, 1000);
  schedule();
});
