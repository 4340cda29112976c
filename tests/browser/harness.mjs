// The harness of console.mjs: its environment, the JSON-lines protocol
// with tests/console.rs, soft checks per scenario, and what the browser
// received (page weight, secrets, screenshots).

import path from 'node:path';
import readline from 'node:readline';

export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
export const BASE = env('CONSOLE_URL').replace(/\/$/, '');
export const TOKEN = env('CONSOLE_TOKEN');
export const NAME = env('CONSOLE_NAME', 'dana');
export const CANARIES = JSON.parse(env('CANARIES', '[]'));
export const AGENTS = JSON.parse(env('AGENTS'));
export const AWAY = env('AWAY_AGENT');
export const VICTIM = env('VICTIM_AGENT');
export const SEARCH_CHAT = env('SEARCH_CHAT');
export const RULE = env('RULE');
export const DEAD_ROW = env('DEAD_ROW');
export const DEAD_CHAT = env('DEAD_CHAT');
export const DEAD_REASON = env('DEAD_REASON');
export const WAITING_CHAT = env('WAITING_CHAT');
export const WAITING_REASON = env('WAITING_REASON');
export const SHOT_DIR = env('SHOT_DIR');
export const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
export const ORIGIN = new URL(BASE).origin;
export const COOKIE = 'assignd_console';

export const log = (...a) => console.error('[console.mjs]', ...a);

// ---- the Rust side -------------------------------------------------------

export const stdin = readline.createInterface({ input: process.stdin });
export const replies = stdin[Symbol.asyncIterator]();
export async function step(name, data = {}) {
  process.stdout.write(JSON.stringify({ step: name, ...data }) + '\n');
  const { value, done } = await replies.next();
  if (done) throw new Error(`no reply to step ${name}: stdin closed`);
  const reply = JSON.parse(value);
  for (const f of reply.failures ?? []) fail(`(rust) ${f}`);
  return reply;
}

// ---- soft checks, per scenario -------------------------------------------

export const scenarios = {}; // name -> { failures: [] }
let current = null;
export function fail(msg) {
  log(`FAIL [${current}] ${msg}`);
  scenarios[current].failures.push(msg);
}
export function check(cond, msg) {
  if (!cond) fail(msg);
  return !!cond;
}
export async function scenario(name, body) {
  current = name;
  scenarios[name] ??= { failures: [] };
  log(`-- ${name}`);
  try {
    await body();
  } catch (e) {
    fail(`threw: ${e.stack ?? e}`);
  }
}

// ---- what the browser received -------------------------------------------

export const received = []; // every response from the console origin
export const pages = {}; // page name -> { url, status, html_bytes, ... }
export const shots = {};

export function watch(context) {
  context.on('response', async (res) => {
    const req = res.request();
    const entry = {
      url: res.url(),
      method: req.method(),
      status: res.status(),
      type: req.resourceType(),
      headers: {},
      body: null,
      bytes: null,
      encoded: null,
    };
    received.push(entry);
    entry.done = (async () => {
      try {
        entry.headers = await res.allHeaders();
      } catch {}
      if (res.status() >= 300 && res.status() < 400) return;
      try {
        const body = await res.body();
        entry.bytes = body.length;
        entry.body = body.toString('latin1');
      } catch {}
      try {
        entry.encoded = (await req.sizes()).responseBodySize;
      } catch {}
    })();
  });
}

// Waits for what the response listener is still reading.
export async function settled() {
  await Promise.all(received.map((r) => r.done));
}

export function secretsIn(text) {
  return CANARIES.filter((c) => c && text.includes(c));
}

// The checks every console page passes, and its record: page weight,
// screenshot, secret scan of what the browser holds.
export async function visited(page, name, { signedIn = true, shot = true } = {}) {
  await page.waitForLoadState('load');
  const url = page.url();
  const html = await page.content();
  const leaked = secretsIn(html);
  check(leaked.length === 0, `${name}: the page contains secrets ${JSON.stringify(leaked)}`);
  const h1 = (await page.locator('h1').first().textContent().catch(() => '')) ?? '';
  check(h1.trim().length > 0, `${name}: no <h1> title`);
  check((await page.locator('main').count()) === 1, `${name}: no <main>`);
  check(
    (await page.locator('script').count()) === 0,
    `${name}: the page has <script> elements (the console needs no JS)`,
  );
  if (signedIn) {
    for (const href of ['/console/agents', '/console/queue', '/console/chat', '/console/audit']) {
      check(
        (await page.locator(`nav#nav a[href="${href}"]`).count()) >= 1,
        `${name}: nav#nav has no a[href="${href}"]`,
      );
    }
    check((await page.locator('form#signout').count()) === 1, `${name}: no form#signout`);
  }
  // Stylesheets: only the embedded one, from the console itself.
  const sheets = await page
    .locator('link[rel~="stylesheet"]')
    .evaluateAll((ls) => ls.map((l) => l.href));
  for (const s of sheets) {
    check(s === `${ORIGIN}/console/style.css`, `${name}: a stylesheet other than /console/style.css: ${s}`);
  }
  if (shot) {
    const file = path.join(SHOT_DIR, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    shots[name] = file;
  }
  await settled();
  const doc = [...received].reverse().find((r) => r.type === 'document' && r.url === url);
  // The stylesheet as it came over the network (later pages take it from
  // the cache: max-age).
  const css = received.find((r) => r.type === 'stylesheet' && r.bytes !== null && r.status === 200);
  pages[name] = {
    url,
    status: doc?.status ?? null,
    h1: h1.trim(),
    html_bytes: doc?.bytes ?? Buffer.byteLength(html),
    html_encoded: doc?.encoded >= 0 ? doc.encoded : null,
    css_bytes: css?.bytes ?? 0,
    css_encoded: css?.encoded >= 0 ? css.encoded : null,
    stylesheets: sheets,
  };
  return html;
}

// Clicks `button` (which submits a form) and waits for the form's
// response and the page it leads to; the form's own response.
export async function submit(page, button, method = 'POST') {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === method && r.request().resourceType() === 'document'),
    button.click(),
  ]);
  await page.waitForLoadState('load');
  if (res.status() >= 400) {
    const sent = await res.request().allHeaders();
    const text = await res.text().catch(() => '');
    log(`${method} ${res.url()} answered ${res.status()}; sent ${JSON.stringify(sent)}; ` +
      `body: ${text.replace(/\s+/g, ' ').slice(0, 600)}`);
  }
  return res;
}

// The browser's cookies for the console (its cookie has Path=/console).
export async function consoleCookies(context) {
  return context.cookies(`${ORIGIN}/console/`);
}

// Checks that a 303 answer's Location is the console path `want` (a query
// string, e.g. for a flash message, is allowed).
export async function redirectsTo(res, want) {
  const location = (await res.allHeaders())['location'] ?? '';
  const to = new URL(location, BASE);
  check(
    to.origin === ORIGIN && to.pathname === want,
    `${res.request().method()} ${new URL(res.url()).pathname}: Location is "${location}", want ${want}`,
  );
  if (to.search) log(`note: ${new URL(res.url()).pathname} redirects to ${location}`);
}

export async function consoleCookie(context) {
  return (await consoleCookies(context)).find((c) => c.name === COOKIE);
}
