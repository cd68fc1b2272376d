/**
 * The status page in a real browser (Debian's chromium through
 * puppeteer-core): it shows a fill in progress with a progress bar while a
 * large cold blob comes from a slow upstream, then the cache size, the hit
 * ratio and the upstreams; and what comes from requests and upstreams
 * (an error message holding `<script>`, a request path holding one) is shown
 * as text, never run. A screenshot is left for a person to look at.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import type { Browser, Page } from 'puppeteer-core';
import { artifactDir, launchChromium } from '../fixtures/browser.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { toolSkip } from '../fixtures/tools.js';
import { ACCEPT_ALL } from '../fixtures/upstreamAuth.js';

const skip = toolSkip('chromium');
const BIG = 4 * 1024 * 1024;
const HALF = BIG / 2;
const SCRIPT_MESSAGE = `<script>document.title='pwned'</script><img src=x onerror="document.title='pwned'">`;

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

/** The texts of every element matching `selector`. */
function texts(page: Page, selector: string): Promise<string[]> {
  return page.$$eval(selector, (nodes) => nodes.map((n) => n.textContent ?? ''));
}

async function get(proxy: RunningProxy, path: string): Promise<number> {
  const res = await request(`${proxy.url}${path}`, { headers: { accept: ACCEPT_ALL } });
  await res.body.arrayBuffer();
  return res.statusCode;
}

test('the status page shows a fill in progress, then the cache, hit ratio and upstreams; foreign text stays text', { skip }, async (t) => {
  const slow: FakeUpstream = await startFakeUpstream();
  const evil: FakeUpstream = await startFakeUpstream();
  stops.push(() => slow.stop(), () => evil.stop());
  const image = makeImage({ layerSizes: [BIG] });
  slow.addImage('web/app', 'v1', image);
  const layer = image.layers[0]!.digest;
  const size = image.layers[0]!.size;
  let release!: () => void;
  const released = new Promise<void>((resolve) => { release = resolve; });
  slow.addFault({ path: `/v2/web/app/blobs/${layer}`, once: true }, { pause: { afterBytes: HALF, until: released } });
  evil.addFault({ path: /\/manifests\// }, { status: { code: 500, body: { errors: [{ code: 'UNKNOWN', message: SCRIPT_MESSAGE }] } } });

  const proxy = await startProxy({
    // evil.test is down after its first 500 (and not probed while the page looks).
    upstreams: [{ name: 'slow.test', url: slow.url }, { name: 'evil.test', url: evil.url, health: { failures: 1, backoff: '1h', maxBackoff: '1h' } }],
    storage: { maxSize: '1GiB', evictionInterval: '1h' },
    // The fill is held halfway while the browser looks: longer than that must not count as a hung upstream.
    upstreamDefaults: { timeouts: { connect: '2s', headers: '3s', bodyIdle: '120s' } },
  });
  stops.push(() => proxy.stop());

  const browser: Browser = await launchChromium();
  stops.push(() => browser.close());
  const page = await browser.newPage();
  await page.setViewport({ width: 412, height: 915, deviceScaleFactor: 2, isMobile: true });
  const scripts: string[] = [];
  page.on('dialog', (dialog) => { scripts.push(dialog.message()); void dialog.dismiss(); });
  await page.goto(`${proxy.adminUrl}/`, { waitUntil: 'load' });
  await page.waitForFunction(() => document.body.dataset['updated'] !== undefined);
  assert.match((await texts(page, '#version'))[0]!, /^pullthrough \d+\.\d+\.\d+/);
  assert.match((await texts(page, '#uptime'))[0]!, /^up /);

  // A cold pull: the manifest, then the big blob, which the upstream holds halfway.
  assert.equal(await get(proxy, '/v2/slow.test/web/app/manifests/v1'), 200);
  const blob = await request(`${proxy.url}/v2/slow.test/web/app/blobs/${layer}`);
  assert.equal(blob.statusCode, 200);
  const body = blob.body.arrayBuffer();

  // The page refreshes by itself: the fill appears, with a bar of the bytes received against the size.
  await page.waitForFunction((half: number) => {
    const bar = document.querySelector<HTMLProgressElement>('#fills li.fill progress');
    return bar !== null && bar.value >= half;
  }, { timeout: 30_000 }, HALF);
  const bar = await page.$eval('#fills li.fill progress', (p) => ({ value: (p as HTMLProgressElement).value, max: (p as HTMLProgressElement).max }));
  assert.equal(bar.max, size);
  assert.equal(bar.value, HALF);
  const fill = (await texts(page, '#fills li.fill'))[0]!;
  assert.match(fill, /slow\.test\/web\/app/);
  assert.match(fill, /2\.0 MiB of 4\.0 MiB/);
  const artifacts = await artifactDir('status-page');
  await page.screenshot({ path: join(artifacts, 'status-page-fill.png'), fullPage: true });

  release();
  assert.equal((await body).byteLength, size);
  // Warm: the same manifest and blob again are hits: 2 of 4 requests.
  assert.equal(await get(proxy, '/v2/slow.test/web/app/manifests/v1'), 200);
  assert.equal(await get(proxy, `/v2/slow.test/web/app/blobs/${layer}`), 200);
  // Foreign text: an upstream's error message (on a GET: a HEAD has no body), and a request path, each holding markup.
  assert.equal(await get(proxy, `/v2/evil.test/x/app/manifests/sha256:${'a'.repeat(64)}`), 503);
  assert.equal(await get(proxy, `/v2/${encodeURIComponent('<script>alert(1)</script>')}/manifests/v1`), 400);

  await page.waitForFunction(() => document.querySelectorAll('#fills li.fill').length === 0
    && document.querySelectorAll('#errors li').length >= 2, { timeout: 30_000 });
  assert.match((await texts(page, '#cache-size'))[0]!, /^4\.0 MiB of 1\.0 GiB/);
  const meter = await page.$eval('#cache-meter', (m) => ({ value: (m as HTMLMeterElement).value, max: (m as HTMLMeterElement).max }));
  assert.ok(meter.value >= BIG && meter.max === 1024 ** 3, JSON.stringify(meter));
  assert.equal((await texts(page, '#hit-ratio'))[0], '50.0 %');
  assert.match((await texts(page, '#saved-detail'))[0]!, /served/);
  const upstreams = await page.$$eval('#upstreams li.upstream', (items) => items.map((li) => ({
    name: li.querySelector('.name')?.textContent, health: li.querySelector('.health')?.textContent,
    requests: li.querySelector('.requests')?.textContent, ratio: li.querySelector('.ratio')?.textContent,
    error: li.querySelector('.error')?.textContent ?? '',
  })));
  assert.deepEqual(upstreams.map((u) => [u.name, u.health, u.requests]), [['slow.test', 'up', '4 requests'], ['evil.test', 'down', '1 request']]);
  assert.equal(upstreams[0]!.ratio, '50.0 % hits');
  assert.equal((await texts(page, '#no-fills'))[0], 'none');
  assert.match((await texts(page, '#most-pulled tr'))[0]!, /slow\.test\/web\/app:v1\s*2/);

  // The markup arrived as text, and nothing of it ran or became an element.
  assert.ok(upstreams[1]!.error.includes(`answered 500: ${SCRIPT_MESSAGE}`), upstreams[1]!.error);
  const errors = (await texts(page, '#errors li')).join('\n');
  assert.ok(errors.includes('<script>alert(1)</script>'), errors);
  assert.equal(await page.$$eval('script', (s) => s.length), 1, 'only the page\'s own script');
  assert.equal(await page.$$eval('img', (i) => i.length), 0);
  assert.equal(await page.title(), 'pullthrough status');
  assert.deepEqual(scripts, []);

  const screenshot = join(artifacts, 'status-page.png');
  await page.screenshot({ path: screenshot, fullPage: true });
  t.diagnostic(`status page screenshots: ${screenshot} and ${join(artifacts, 'status-page-fill.png')}`);
  process.stdout.write(`# status page screenshot: ${screenshot}\n`);
});
