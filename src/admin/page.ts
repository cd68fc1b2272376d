import { createHash } from 'node:crypto';

/**
 * The status page: one small HTML document, no framework, no external
 * assets. Its script fetches `status.json` every few seconds and renders it
 * with DOM nodes and `textContent` only (never HTML strings), so whatever
 * comes from requests or upstreams (repository names, error messages) is
 * shown as text. The Content-Security-Policy allows exactly this page's own
 * style and script, as a second line of defence.
 */

const STYLE = `
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #5b6470; --bg: #f6f7f9; --card: #fff; --line: #dde1e6; --accent: #1f6feb; --bad: #c62828; --good: #2e7d32; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --muted: #9aa4af; --bg: #111418; --card: #1a1f25; --line: #2b323a; --accent: #58a6ff; --bad: #ff7b72; --good: #56d364; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 14px 16px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { font-size: 1.25rem; margin: 0; }
header p { margin: 2px 0 0; color: var(--muted); font-size: .9rem; }
main { max-width: 960px; margin: 0 auto; padding: 12px; display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 1rem; margin: 0 0 8px; }
.big { font-size: 1.6rem; font-weight: 600; }
.muted { color: var(--muted); font-size: .9rem; }
meter, progress { width: 100%; height: 18px; }
table { width: 100%; border-collapse: collapse; font-size: .95rem; }
th, td { text-align: left; padding: 6px 4px; border-top: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
th { color: var(--muted); font-weight: 500; border-top: 0; }
td.num, th.num { text-align: right; white-space: nowrap; }
.health { font-size: .85rem; font-weight: 600; padding: 1px 8px; border-radius: 999px; border: 1px solid currentColor; }
.up { color: var(--good); }
.down { color: var(--bad); }
.unknown { color: var(--muted); }
.line { display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: baseline; justify-content: space-between; }
.muted.line { justify-content: flex-start; }
.error { color: var(--bad); font-size: .9rem; margin-top: 4px; }
ul { list-style: none; margin: 0; padding: 0; }
li { padding: 6px 0; border-top: 1px solid var(--line); overflow-wrap: anywhere; }
li:first-child { border-top: 0; }
code { font-size: .85rem; }
#stale { color: var(--bad); }
@media (max-width: 480px) { .hide-narrow { display: none; } main { padding: 8px; gap: 8px; } }
`;

const SCRIPT = `
'use strict';
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
function bytes(n) {
  if (n === null || n === undefined) return 'unknown';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}
function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many || one + 's'); }
function percent(ratio) { return ratio === null ? 'no requests yet' : (ratio * 100).toFixed(1) + ' %'; }
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d > 0 ? d + ' d ' + h + ' h' : h > 0 ? h + ' h ' + m + ' min' : m + ' min ' + (s % 60) + ' s';
}
function row(cells, classes) {
  const tr = document.createElement('tr');
  cells.forEach((c, i) => tr.appendChild(el('td', c, classes && classes[i])));
  return tr;
}
function render(s) {
  $('version').textContent = 'pullthrough ' + s.version;
  $('uptime').textContent = 'up ' + duration(s.uptimeSeconds) + ', since ' + new Date(s.startedAt).toLocaleString();
  const used = s.storage.usedBytes, max = s.storage.maxBytes;
  const meter = $('cache-meter');
  meter.max = max || Math.max(used || 0, 1);
  meter.value = used || 0;
  meter.high = max ? max * 0.9 : meter.max;
  $('cache-size').textContent = bytes(used) + (max ? ' of ' + bytes(max) + ' (' + percent((used || 0) / max) + ')' : ' (no maxSize)');
  $('hit-ratio').textContent = percent(s.requests.hitRatio);
  const q = s.requests;
  $('hit-detail').textContent = plural(q.hit, 'hit') + ', ' + q.stale + ' stale, ' + plural(q.miss, 'miss', 'misses') + ', '
    + q.coalesced + ' joined a fill, ' + plural(q.error, 'error') + ' (manifests and blobs)';
  $('saved').textContent = bytes(s.bytes.saved);
  $('saved-detail').textContent = bytes(s.bytes.served) + ' served, ' + bytes(s.bytes.fetched) + ' fetched';
  $('upstreams').replaceChildren(...s.upstreams.map((u) => {
    const li = el('li', undefined, 'upstream');
    const head = el('div', undefined, 'line');
    head.appendChild(el('strong', u.name, 'name'));
    head.appendChild(el('span', u.offline ? 'offline' : u.health.state, 'health ' + u.health.state));
    li.appendChild(head);
    const r = u.requests;
    const facts = el('div', undefined, 'muted line');
    facts.appendChild(el('span', plural(r.hit + r.miss + r.coalesced + r.stale + r.error, 'request'), 'requests'));
    facts.appendChild(el('span', r.hitRatio === null ? 'no hit ratio yet' : percent(r.hitRatio) + ' hits', 'ratio'));
    facts.appendChild(el('span', u.rateLimit ? 'rate limit ' + u.rateLimit.remaining + ' of ' + u.rateLimit.limit + ' left'
      : 'no rate limit reported', 'limit'));
    li.appendChild(facts);
    if (u.health.lastError) {
      li.appendChild(el('div', 'last error' + (u.health.lastFailure ? ' at ' + new Date(u.health.lastFailure).toLocaleTimeString() : '')
        + ': ' + u.health.lastError, 'error'));
    }
    return li;
  }));
  const fills = $('fills');
  fills.replaceChildren(...s.fills.map((f) => {
    const li = el('li');
    li.className = 'fill';
    li.appendChild(el('div', f.repository));
    li.appendChild(el('code', f.digest.slice(0, 19) + '…'));
    const bar = document.createElement('progress');
    if (f.sizeBytes !== null) { bar.max = f.sizeBytes; bar.value = f.receivedBytes || 0; }
    li.appendChild(bar);
    li.appendChild(el('div', bytes(f.receivedBytes) + ' of ' + bytes(f.sizeBytes), 'muted'));
    return li;
  }));
  $('no-fills').hidden = s.fills.length > 0;
  $('most-pulled').replaceChildren(...s.mostPulled.map((p) => row([p.image, p.pulls], [undefined, 'num'])));
  $('errors').replaceChildren(...s.lastErrors.map((e) => el('li', new Date(e.at).toLocaleTimeString() + ' ' + e.method + ' ' + e.path
    + ' → ' + e.status + (e.code ? ' ' + e.code : '') + (e.message ? ': ' + e.message : ''))));
  $('no-errors').hidden = s.lastErrors.length > 0;
  $('redis').textContent = s.redis === null ? 'not configured' : s.redis.connected ? 'connected' : 'NOT connected';
  $('stale').hidden = true;
}
async function refresh() {
  try {
    const response = await fetch('status.json', { cache: 'no-store' });
    if (!response.ok) throw new Error('status.json answered ' + response.status);
    render(await response.json());
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    $('stale').hidden = false;
    $('stale').textContent = 'Not updating: ' + err.message;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
`;

const BODY = `
<header>
  <h1 id="version">pullthrough</h1>
  <p id="uptime">loading…</p>
  <p id="stale" hidden></p>
</header>
<main>
  <section>
    <h2>Cache size</h2>
    <meter id="cache-meter" min="0" value="0"></meter>
    <p id="cache-size" class="muted"></p>
  </section>
  <section>
    <h2>Hit ratio</h2>
    <div id="hit-ratio" class="big"></div>
    <p id="hit-detail" class="muted"></p>
  </section>
  <section>
    <h2>Egress saved</h2>
    <div id="saved" class="big"></div>
    <p id="saved-detail" class="muted"></p>
  </section>
  <section class="wide">
    <h2>Upstreams</h2>
    <ul id="upstreams"></ul>
    <p class="muted">Redis: <span id="redis"></span></p>
  </section>
  <section class="wide">
    <h2>Fills in progress</h2>
    <ul id="fills"></ul>
    <p id="no-fills" class="muted">none</p>
  </section>
  <section>
    <h2>Most pulled</h2>
    <table><thead><tr><th>image</th><th class="num">pulls</th></tr></thead><tbody id="most-pulled"></tbody></table>
  </section>
  <section>
    <h2>Last errors</h2>
    <ul id="errors"></ul>
    <p id="no-errors" class="muted">none</p>
  </section>
</main>`;

const hash = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

/** The page, built once. */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pullthrough status</title>
<style>${STYLE}</style>
</head>
<body>${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`;

/** Only this page's own style and script run; it may fetch only from where it came from. */
export const STATUS_PAGE_CSP = [
  "default-src 'none'",
  `style-src ${hash(STYLE)}`,
  `script-src ${hash(SCRIPT)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');
