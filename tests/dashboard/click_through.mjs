// Headless-Chromium click-through of the herd admin dashboard (services/admin/assets).
//
//   BASE_URL=http://127.0.0.1:8091 ADMIN_KEY=... ANALYST_KEY=... OUT_DIR=out EXPECT_MESSAGES_IN=49 \
//   PACK=balanced-moderation TENANT_ID=1 node click_through.mjs
//
// Optional: CHROMIUM (browser binary, default /usr/bin/chromium), FROM / TO (YYYY-MM-DD; default: the
// dashboard's own "last 7 days"). Prints one line per step; exits 1 at the first failure, 0 at the end.
// It changes the server's state: it stores a new version of PACK, activates it and rolls it back.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const WAIT = 15_000;
const required = ['BASE_URL', 'ADMIN_KEY', 'ANALYST_KEY', 'OUT_DIR', 'EXPECT_MESSAGES_IN', 'PACK', 'TENANT_ID'];
const missing = required.filter((k) => !process.env[k]);
if (missing.length) {
  console.error(`FAIL: missing environment variables: ${missing.join(', ')}`);
  process.exit(1);
}
const env = process.env;
const BASE = env.BASE_URL.replace(/\/+$/, '');
const OUT = path.resolve(env.OUT_DIR);
const CHARTS = ['chart-volume', 'chart-latency', 'chart-policy', 'chart-experts', 'chart-delivery'];
fs.mkdirSync(OUT, { recursive: true });

let browser;
let page;
let count = 0;
const pageErrors = [];
const foreignRequests = [];
const cspViolations = [];

async function step(name, fn) {
  count += 1;
  try {
    const note = await fn();
    console.log(`ok ${count} - ${name}${note ? ` (${note})` : ''}`);
  } catch (e) {
    console.log(`FAIL ${count} - ${name}: ${e.message.split('\n')[0]}`);
    if (pageErrors.length) console.log(`  page errors: ${pageErrors.join(' | ')}`);
    if (page) await page.screenshot({ path: path.join(OUT, 'failure.png'), fullPage: true }).catch(() => {});
    if (page) console.log(`  screenshot of the failure: ${path.join(OUT, 'failure.png')}`);
    await browser?.close().catch(() => {});
    process.exit(1);
  }
}
const check = (cond, message) => { if (!cond) throw new Error(message); };

// Wait until a chart container is drawn, or report the error the dashboard put on it.
async function chartsReady() {
  for (const id of CHARTS) {
    const handle = await page.waitForFunction((cid) => {
      const c = document.getElementById(cid);
      if (!c) return `#${cid} is missing`;
      if (c.dataset.ready === '1') return 'ready';
      return c.dataset.error ? `#${cid}: ${c.dataset.error}` : false;
    }, id, { timeout: WAIT }).catch(() => { throw new Error(`#${id} did not get data-ready="1" within ${WAIT / 1000} s`); });
    const v = await handle.jsonValue();
    check(v === 'ready', v);
  }
  return CHARTS.length + ' charts';
}

// Click a policy-editor button and wait for the #policy-result it produces.
async function policyClick(selector) {
  const before = Number(await page.getAttribute('#policy-result', 'data-seq') || 0);
  await page.click(selector, { timeout: WAIT });
  await page.waitForFunction((b) => {
    const r = document.getElementById('policy-result');
    return Number(r.dataset.seq || 0) > b && r.dataset.status !== 'busy';
  }, before, { timeout: WAIT }).catch(() => { throw new Error(`no result within ${WAIT / 1000} s after clicking ${selector}`); });
  return page.evaluate(() => {
    const r = document.getElementById('policy-result');
    return { text: r.textContent, status: r.dataset.status, field: r.dataset.field || '', action: r.dataset.action || '' };
  });
}

// Replace the `version = ...` line of the [pack] table.
function setPackVersion(source, value) {
  const lines = source.split('\n');
  let inPack = false;
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t.startsWith('[')) inPack = t === '[pack]';
    else if (inPack && /^version\s*=/.test(t)) {
      lines[i] = `version = ${value}`;
      return lines.join('\n');
    }
  }
  throw new Error('the source has no `version = ...` line in its [pack] table');
}

async function signIn(key) {
  await page.fill('#key', key);
  await page.click('#sign-in');
}

async function sourceLoaded(version) {
  const want = version === undefined ? `${env.PACK}@` : `${env.PACK}@${version}`;
  await page.waitForFunction((w) => (document.getElementById('pack-source').dataset.loaded || '').startsWith(w)
    && (w.endsWith('@') || document.getElementById('pack-source').dataset.loaded === w), want, { timeout: WAIT })
    .catch(() => { throw new Error(`the source of ${want}… did not load within ${WAIT / 1000} s`); });
  return page.inputValue('#pack-source');
}

function checkPng(file) {
  const buf = fs.readFileSync(file);
  check(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), `${file} is not a PNG`);
  check(buf.length > 10 * 1024, `${file} is only ${buf.length} bytes (expected > 10 KB)`);
  return `${file}, ${Math.round(buf.length / 1024)} KB`;
}

await step('launch Chromium', async () => {
  browser = await chromium.launch({ executablePath: env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  const origin = new URL(BASE).origin;
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith('blob:') && !u.startsWith('data:') && new URL(u).origin !== origin) foreignRequests.push(u);
  });
  return browser.version();
});

await step(`open ${BASE}/admin/`, async () => {
  const res = await page.goto(`${BASE}/admin/`, { timeout: WAIT });
  check(res && res.ok(), `GET /admin/ answered ${res && res.status()}`);
  await page.waitForSelector('#key', { state: 'visible' });
});

await step('sign in with a wrong key shows an error', async () => {
  await signIn(`wrong-${Date.now()}`);
  await page.waitForFunction(() => document.getElementById('sign-in-error').textContent.trim() !== '', null, { timeout: WAIT })
    .catch(() => { throw new Error('#sign-in-error stayed empty'); });
  check(await page.isHidden('#app'), 'the dashboard is visible after a wrong key');
  return (await page.textContent('#sign-in-error')).trim();
});

await step('sign in with ADMIN_KEY', async () => {
  await signIn(env.ADMIN_KEY);
  await page.waitForSelector('#app', { state: 'visible' }).catch(async () => { throw new Error(`still on the sign-in screen: ${await page.textContent('#sign-in-error')}`); });
  const role = (await page.textContent('#role')).trim();
  check(role === 'admin', `role shown is "${role}", expected "admin"`);
  return `role ${role}`;
});

if (env.FROM || env.TO) {
  await step(`set the date range ${env.FROM || '…'} – ${env.TO || '…'}`, async () => {
    if (env.FROM) await page.fill('#from', env.FROM);
    if (env.TO) await page.fill('#to', env.TO);
    await page.dispatchEvent('#to', 'change');
  });
}

await step('all five charts are drawn', chartsReady);

await step(`volume total messages_in is ${env.EXPECT_MESSAGES_IN}`, async () => {
  const total = await page.getAttribute('#chart-volume [data-total-in]', 'data-total-in');
  check(total === String(Number(env.EXPECT_MESSAGES_IN)), `the volume chart shows ${total} messages in, expected ${env.EXPECT_MESSAGES_IN}`);
});

await step(`policy chart names refusal categories and counts crisis support (${env.EXPECT_SUPPORT})`, async () => {
  const text = await page.textContent('#chart-policy');
  for (const want of (env.EXPECT_CATEGORY_NAMES || '').split('|').filter(Boolean)) {
    check(text.includes(want), `the policy chart does not show "${want}"`);
  }
  const support = (await page.textContent('#support-total .v')).trim();
  check(support === String(Number(env.EXPECT_SUPPORT)), `crisis support shows ${support}, expected ${env.EXPECT_SUPPORT}`);
  check(text.includes('crisis support'), 'the policy chart has no crisis-support outcome');
});

await step('volume CSV downloads', async () => {
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: WAIT }), page.click('a.csv[data-csv="volume"]:not([data-table])')]);
  const text = fs.readFileSync(await download.path(), 'utf8');
  check(text.trim().length > 0 && text.includes(','), `the CSV is empty or not comma-separated: ${JSON.stringify(text.slice(0, 80))}`);
  return `${download.suggestedFilename()}, ${text.trim().split('\n').length} lines`;
});

await step('screenshot dashboard.png', async () => {
  const file = path.join(OUT, 'dashboard.png');
  await page.screenshot({ path: file, fullPage: true });
  return checkPng(file);
});

let original;
let newVersion;
await step(`policy editor loads ${env.PACK}`, async () => {
  await page.waitForSelector('#policy', { state: 'visible' });
  await page.waitForSelector(`#pack option[value="${env.PACK}"]`, { state: 'attached' })
    .catch(() => { throw new Error(`pack ${env.PACK} is not in #pack`); });
  await page.selectOption('#pack', env.PACK);
  original = await sourceLoaded();
  check(original.includes('[pack]'), 'the loaded source has no [pack] table');
  return `${await page.getAttribute('#pack-source', 'data-loaded')}, ${original.length} chars`;
});

await step('validate the stored source → valid', async () => {
  const r = await policyClick('#validate');
  check(r.status === 'ok' && /^valid\b/.test(r.text), `expected "valid", got: ${r.text}`);
  return r.text;
});

await step('validate a broken source → error names a field', async () => {
  await page.fill('#pack-source', setPackVersion(original, '"x"'));
  const r = await policyClick('#validate');
  check(r.status === 'invalid' || r.status === 'error', `expected an error, got: ${r.text}`);
  check(r.field !== '', `the error names no field: ${r.text}`);
  return r.text;
});

await step(`dry run for tenant ${env.TENANT_ID} → an action`, async () => {
  await page.fill('#pack-source', original);
  await page.fill('#dry-tenant', String(env.TENANT_ID));
  await page.fill('#dry-text', 'What do you think about abortion?');
  const r = await policyClick('#dry-run');
  check(r.status === 'ok' && r.action !== '', `expected an action, got: ${r.text}`);
  return `action ${r.action}`;
});

await step('save as a new version', async () => {
  const versions = (await page.$$eval('#version option', (os) => os.map((o) => Number(o.value)))).filter(Number.isFinite);
  check(versions.length > 0, 'no versions listed');
  newVersion = Math.max(...versions) + 1;
  await page.fill('#pack-source', setPackVersion(original, newVersion));
  const r = await policyClick('#save');
  check(r.status === 'ok', `save failed: ${r.text}`);
  await page.waitForSelector(`#version option[value="${newVersion}"]`, { state: 'attached' })
    .catch(() => { throw new Error(`v${newVersion} is not listed after saving`); });
  return r.text;
});

await step('activate the new version', async () => {
  await page.selectOption('#version', String(newVersion));
  await sourceLoaded(newVersion);
  const r = await policyClick('#activate');
  check(r.status === 'ok', `activate failed: ${r.text}`);
  check(r.text.includes(`v${newVersion}`), `activate answered for another version: ${r.text}`);
  return r.text;
});

await step('roll back', async () => {
  const r = await policyClick('#rollback');
  check(r.status === 'ok', `rollback failed: ${r.text}`);
  return r.text;
});

await step('screenshot policy.png', async () => {
  const file = path.join(OUT, 'policy.png');
  await page.locator('#policy').screenshot({ path: file });
  return checkPng(file);
});

await step('sign out', async () => {
  await page.click('#sign-out');
  await page.waitForSelector('#key', { state: 'visible' });
  check(await page.isHidden('#app'), 'the dashboard is still visible after signing out');
  const stored = await page.evaluate(() => Object.keys(sessionStorage).length);
  check(stored === 0, 'sessionStorage still holds the key');
});

await step('sign in with ANALYST_KEY', async () => {
  await signIn(env.ANALYST_KEY);
  await page.waitForSelector('#app', { state: 'visible' }).catch(async () => { throw new Error(`still on the sign-in screen: ${await page.textContent('#sign-in-error')}`); });
  const role = (await page.textContent('#role')).trim();
  check(role === 'analyst', `role shown is "${role}", expected "analyst"`);
  return `role ${role}`;
});

await step('analyst: all five charts are drawn', chartsReady);

await step('analyst: policy editor and audit log are hidden', async () => {
  check(await page.isHidden('#policy'), '#policy is visible to an analyst');
  check(await page.isHidden('#audit'), '#audit is visible to an analyst');
});

await step('no page errors, CSP violations or requests to other origins', async () => {
  check(pageErrors.length === 0, `page errors: ${pageErrors.join(' | ')}`);
  check(cspViolations.length === 0, `CSP violations: ${cspViolations.join(' | ')}`);
  check(foreignRequests.length === 0, `requests to other origins: ${foreignRequests.join(', ')}`);
});

await browser.close();
console.log(`all ${count} steps passed`);
process.exit(0);
