// The console (/console/) in a real browser: headless Debian Chromium,
// driven by playwright-core. Run by tests/console.rs, which starts the
// daemon, owns the database and checks it between the steps.
//
// Protocol (see tests/support/browser.rs): every line this script prints on
// stdout is one JSON object. `{"step": NAME, ...}` asks the Rust side to
// check or change something, and the script then waits for one JSON line on
// stdin (the reply); `{"done": {...}}` is the last line. Diagnostics go to
// stderr. A failed check does not stop the script: each scenario records
// its own failures, so one run reports every scenario.
//
// Environment:
//   CONSOLE_URL    http://127.0.0.1:PORT (the daemon's listener)
//   CONSOLE_TOKEN  the console token; CONSOLE_NAME who signs in ("dana")
//   CANARIES       JSON array of secret values no page may contain
//   AGENTS         JSON array of the agent names; AWAY_AGENT, VICTIM_AGENT
//   SEARCH_CHAT    a chat id already assigned; RULE the rule that did it
//   DEAD_ROW, DEAD_CHAT, DEAD_REASON  a dead queue row the Rust side made
//   WAITING_CHAT, WAITING_REASON      a pending row not due for an hour
//   SHOT_DIR       where the screenshots go
//   CHROMIUM       the browser (default /usr/bin/chromium)

import http from 'node:http';
import { chromium, request as pwRequest } from 'playwright-core';
import {
  env,
  BASE,
  TOKEN,
  NAME,
  CANARIES,
  AGENTS,
  AWAY,
  VICTIM,
  SEARCH_CHAT,
  RULE,
  DEAD_ROW,
  DEAD_CHAT,
  DEAD_REASON,
  WAITING_CHAT,
  WAITING_REASON,
  SHOT_DIR,
  CHROMIUM,
  ORIGIN,
  COOKIE,
  log,
  stdin,
  step,
  scenarios,
  fail,
  check,
  scenario,
  received,
  pages,
  shots,
  watch,
  settled,
  secretsIn,
  visited,
  submit,
  consoleCookies,
  redirectsTo,
  consoleCookie,
} from './harness.mjs';

async function stateOf(page, agent) {
  const cell = page.locator(`table#agents tr[data-agent="${agent}"] td.state`);
  if ((await cell.count()) !== 1) return null;
  return ((await cell.textContent()) ?? '').trim();
}

// ---- the run ---------------------------------------------------------------

// The attacker's site: a page that auto-submits a form to the console.
const attackerOrigins = new Set();
let attackerForm = { agent: VICTIM, csrf: 'guessed' };
const attacker = http.createServer((req, res) => {
  const esc = (s) => String(s).replace(/[&"<>]/g, (c) => `&#${c.charCodeAt(0)};`);
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><title>You won</title>
<form id="f" method="post" action="${esc(BASE)}/console/agents/away">
<input type="hidden" name="csrf" value="${esc(attackerForm.csrf)}">
<input type="hidden" name="agent" value="${esc(attackerForm.agent)}">
<input type="hidden" name="until" value="">
<button>Claim your prize</button></form>
<script>document.getElementById('f').submit()</script>`);
});
await new Promise((ok) => attacker.listen(0, '127.0.0.1', ok));
const attackerPort = attacker.address().port;
// Another port of the same host: same site, another origin (the cookie
// goes along, SameSite or not); `localhost`: another site altogether.
const sameSiteAttacker = `http://127.0.0.1:${attackerPort}`;
const crossSiteAttacker = `http://localhost:${attackerPort}`;
attackerOrigins.add(sameSiteAttacker).add(crossSiteAttacker);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // Playwright gives the browser a new empty --user-data-dir of its own.
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--disable-quic',
    '--disable-sync',
  ],
});
log(`Chromium ${browser.version()}`);
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
context.setDefaultTimeout(10_000);
watch(context);
const page = await context.newPage();
const foreignRequests = [];
context.on('request', (r) => {
  const u = new URL(r.url());
  if (u.origin !== ORIGIN && !attackerOrigins.has(u.origin)) foreignRequests.push(r.url());
});

let csrf = null;

await scenario('5 wrong token refused', async () => {
  const res = await page.goto(`${BASE}/console/agents`);
  check(
    new URL(page.url()).pathname === '/console/signin',
    `GET /console/agents without a session should end on /console/signin, got ${page.url()} (${res?.status()})`,
  );
  await page.goto(`${BASE}/console/signin`);
  await visited(page, 'signin', { signedIn: false });
  check((await page.locator('form#signin input[name=name]').count()) === 1, 'no form#signin input[name=name]');
  check(
    (await page.locator('form#signin input[name=token][type=password]').count()) === 1,
    'no form#signin input[name=token][type=password]',
  );
  await page.fill('form#signin input[name=name]', NAME);
  await page.fill('form#signin input[name=token]', `${TOKEN}-wrong`);
  const post = await submit(page, page.locator('form#signin button[type=submit]'));
  check(post.status() === 401, `POST /console/signin with a wrong token: want 401, got ${post.status()}`);
  const setCookie = (await post.allHeaders())['set-cookie'];
  check(!setCookie, `the refused sign-in set a cookie: ${setCookie}`);
  check(await page.locator('#signin-error').isVisible(), 'no visible #signin-error after a wrong token');
  check((await consoleCookies(context)).length === 0, 'a cookie is set after a wrong token');
  check((await page.locator('form#signin').count()) === 1, 'the 401 page is not the sign-in page again');
  await visited(page, 'signin-refused', { signedIn: false, shot: false });
});

await scenario('1 sign in', async () => {
  await page.goto(`${BASE}/console/`);
  check(
    (await page.locator('form#signin').count()) === 1,
    `GET /console/ without a session should show the sign-in page, got ${page.url()}`,
  );
  await page.fill('form#signin input[name=name]', NAME);
  await page.fill('form#signin input[name=token]', TOKEN);
  const post = await submit(page, page.locator('form#signin button[type=submit]'));
  check(post.status() === 303, `POST /console/signin with the right token: want 303, got ${post.status()}`);
  await redirectsTo(post, '/console/agents');
  check(new URL(page.url()).pathname === '/console/agents', `after sign-in the browser is on ${page.url()}`);
  const cookie = await consoleCookie(context);
  if (check(cookie, `no ${COOKIE} cookie after sign-in`)) {
    check(cookie.httpOnly === true, 'the session cookie is not HttpOnly');
    check(cookie.sameSite === 'Strict', `the session cookie is SameSite=${cookie.sameSite}, want Strict`);
    check(cookie.path === '/console', `the session cookie's Path is ${cookie.path}, want /console`);
    check(cookie.value !== TOKEN && !cookie.value.includes(TOKEN), 'the session cookie holds the token');
    check(secretsIn(cookie.value).length === 0, 'the session cookie holds a secret');
    check(cookie.value.length >= 16, `the session cookie value is short (${cookie.value.length} chars)`);
  }
  check(
    (await consoleCookies(context)).every((c) => c.name === COOKIE),
    `other cookies: ${JSON.stringify(await consoleCookies(context))}`,
  );
  const again = await page.goto(`${BASE}/console/`);
  check(
    new URL(page.url()).pathname === '/console/agents',
    `GET /console/ when signed in should go to /console/agents, got ${page.url()} (${again?.status()})`,
  );
  await step('signed_in');
});

await scenario('2 mark away and back', async () => {
  await page.goto(`${BASE}/console/agents`);
  check((await page.locator('table#agents').count()) === 1, 'no table#agents');
  for (const a of AGENTS) {
    const row = page.locator(`table#agents tr[data-agent="${a}"]`);
    if (!check((await row.count()) === 1, `no tr[data-agent="${a}"]`)) continue;
    const open = ((await row.locator('td.open').textContent()) ?? '').trim();
    check(/^\d+$/.test(open), `${a}: td.open is "${open}", not a number`);
    check((await row.locator('td.cap').count()) === 1, `${a}: no td.cap`);
    const shift = ((await row.locator('td.shift').textContent()) ?? '').trim();
    check(['on shift', 'off shift', 'always'].includes(shift), `${a}: td.shift is "${shift}"`);
    const state = (await stateOf(page, a)) ?? '';
    check(state.startsWith('available'), `${a}: td.state is "${state}" before any change`);
    check((await row.locator('form.away').count()) === 1, `${a}: no form.away while available`);
    check((await row.locator('form.back').count()) === 0, `${a}: a form.back while available`);
  }
  check((await page.locator('figure#today svg').count()) === 1, 'no figure#today with an inline <svg>');
  check((await page.locator('figure#today figcaption').count()) === 1, 'no figure#today figcaption');
  csrf = await page
    .locator(`tr[data-agent="${AWAY}"] form.away input[name=csrf]`)
    .getAttribute('value')
    .catch(() => null);
  check(csrf && csrf.length >= 16, `form.away has no csrf value (${csrf})`);
  check(
    (await page.locator(`tr[data-agent="${AWAY}"] form.away input[name=until]`).getAttribute('type')) ===
      'datetime-local',
    'form.away input[name=until] is not type=datetime-local',
  );

  const away = await submit(page, page.locator(`tr[data-agent="${AWAY}"] form.away button`));
  check(away.status() === 303, `POST /console/agents/away: want 303, got ${away.status()}`);
  await redirectsTo(away, '/console/agents');
  check(new URL(page.url()).pathname === '/console/agents', `after Mark away the browser is on ${page.url()}`);
  const state = (await stateOf(page, AWAY)) ?? '';
  check(state.startsWith('away'), `${AWAY}: td.state is "${state}" after Mark away`);
  check(
    (await page.locator(`tr[data-agent="${AWAY}"] form.back`).count()) === 1,
    `${AWAY}: no form.back while away`,
  );
  // The Rust side checks agent_away, enqueues chats, waits for them.
  const r = await step('away', { agent: AWAY });
  await page.reload();
  await visited(page, 'agents');
  const still = (await stateOf(page, AWAY)) ?? '';
  check(still.startsWith('away'), `${AWAY}: td.state is "${still}" after the chats were assigned`);
  // Open chats as the table shows them, against what the database says.
  for (const [a, n] of Object.entries(r.open ?? {})) {
    const shown = (await page.locator(`tr[data-agent="${a}"] td.open`).textContent().catch(() => '')).trim();
    check(shown === String(n), `${a}: td.open says ${shown}, the database ${n}`);
  }

  const back = await submit(page, page.locator(`tr[data-agent="${AWAY}"] form.back button`));
  check(back.status() === 303, `POST /console/agents/back: want 303, got ${back.status()}`);
  await redirectsTo(back, '/console/agents');
  const after = (await stateOf(page, AWAY)) ?? '';
  check(after.startsWith('available'), `${AWAY}: td.state is "${after}" after Mark back`);
  check(
    (await page.locator(`tr[data-agent="${AWAY}"] form.away`).count()) === 1,
    `${AWAY}: no form.away after Mark back`,
  );
  await step('back', { agent: AWAY });
});

await scenario('6 forged cross-site POST refused', async () => {
  if (!csrf) {
    await page.goto(`${BASE}/console/agents`);
    csrf = await page.locator('form.away input[name=csrf]').first().getAttribute('value');
  }
  const forged = async (from, form) => {
    attackerForm = form;
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(`${BASE}/console/`)),
      page.goto(`${from}/prize`),
    ]);
    await page.waitForLoadState('load');
    const sent = await res.request().allHeaders();
    return { status: res.status(), origin: sent['origin'], cookie: (sent['cookie'] ?? '').includes(COOKIE) };
  };
  // Another site: SameSite=Strict keeps the cookie home.
  const cross = await forged(crossSiteAttacker, { agent: VICTIM, csrf: 'guessed' });
  log(`cross-site forged POST: ${JSON.stringify(cross)}`);
  check(!cross.cookie, 'the session cookie went along with a cross-site POST');
  check(
    cross.status === 401 || cross.status === 403,
    `cross-site forged POST /console/agents/away: want 401 or 403, got ${cross.status}`,
  );
  // The same site on another port, even with the real csrf value: the
  // cookie goes along, the Origin header must stop it.
  const same = await forged(sameSiteAttacker, { agent: VICTIM, csrf });
  log(`same-site cross-origin forged POST: ${JSON.stringify(same)}`);
  check(
    same.status === 403,
    `forged POST from ${sameSiteAttacker} (Origin ${same.origin}, cookie sent: ${same.cookie}, ` +
      `right csrf): want 403, got ${same.status}`,
  );

  // Direct requests with the session cookie.
  const post = (route, form, headers = {}) =>
    context.request.post(`${BASE}${route}`, { form, headers, maxRedirects: 0, failOnStatusCode: false });
  const own = { Origin: ORIGIN };
  const cases = [
    ['wrong csrf', '/console/agents/away', { csrf: `${csrf}x`, agent: VICTIM, until: '' }, own, 403],
    ['no csrf', '/console/agents/away', { agent: VICTIM, until: '' }, own, 403],
    ['foreign Origin', '/console/agents/away', { csrf, agent: VICTIM, until: '' }, { Origin: 'http://evil.example' }, 403],
    ['Sec-Fetch-Site: cross-site', '/console/agents/away', { csrf, agent: VICTIM, until: '' },
      { ...own, 'Sec-Fetch-Site': 'cross-site' }, 403],
    ['retry-all, foreign Origin', '/console/queue/retry', { csrf, all: '1' }, { Origin: 'http://evil.example' }, 403],
    // The control: the same request done right is accepted (back for an
    // agent who is not away changes nothing).
    ['control: right csrf, own Origin', '/console/agents/back', { csrf, agent: VICTIM }, own, 303],
  ];
  for (const [what, route, form, headers, want] of cases) {
    const res = await post(route, form, headers);
    check(res.status() === want, `POST ${route} (${what}): want ${want}, got ${res.status()}`);
    const body = await res.text();
    check(secretsIn(body).length === 0, `POST ${route} (${what}): the answer contains a secret`);
  }
  // No session at all: 401.
  const bare = await pwRequest.newContext();
  const res = await bare.post(`${BASE}/console/agents/away`, {
    form: { csrf, agent: VICTIM, until: '' },
    headers: own,
    maxRedirects: 0,
    failOnStatusCode: false,
  });
  check(res.status() === 401, `POST /console/agents/away without a session: want 401, got ${res.status()}`);
  await bare.dispose();

  await page.goto(`${BASE}/console/agents`);
  const state = (await stateOf(page, VICTIM)) ?? '';
  check(state.startsWith('available'), `${VICTIM}: td.state is "${state}" after the forged POSTs`);
  await step('forged', { agent: VICTIM });
});

await scenario('3 retry a dead letter', async () => {
  await page.goto(`${BASE}/console/queue`);
  const waiting = page.locator(`table#waiting tr[data-chat="${WAITING_CHAT}"]`);
  if (check((await waiting.count()) === 1, `no table#waiting tr[data-chat="${WAITING_CHAT}"]`)) {
    const cell = async (c) => ((await waiting.locator(`td.${c}`).textContent().catch(() => '')) ?? '').trim();
    const [state, age, reason] = [await cell('state'), await cell('age'), await cell('reason')];
    log(`waiting row: state "${state}", age "${age}", reason "${reason}"`);
    check(state === 'pending', `the waiting row's td.state is "${state}", want "pending"`);
    check(age.length > 0, "the waiting row's td.age is empty");
    check(reason.includes(WAITING_REASON), `the waiting row's td.reason is "${reason}", want it to include "${WAITING_REASON}"`);
  }
  const row = page.locator(`table#dead tr[data-row="${DEAD_ROW}"][data-chat="${DEAD_CHAT}"]`);
  if (!check((await row.count()) === 1, `no table#dead tr[data-row="${DEAD_ROW}"][data-chat="${DEAD_CHAT}"]`)) {
    log(await page.locator('main').innerHTML().catch(() => ''));
    return;
  }
  const reason = ((await row.locator('td.reason').textContent()) ?? '').trim();
  check(reason.includes(DEAD_REASON), `the dead row's td.reason is "${reason}", want it to include "${DEAD_REASON}"`);
  check((await page.locator('form#retry-all').count()) === 1, 'no form#retry-all while a row is dead');
  await visited(page, 'queue');
  const res = await submit(page, row.locator('form.retry button'));
  check(res.status() === 303, `POST /console/queue/retry: want 303, got ${res.status()}`);
  await redirectsTo(res, '/console/queue');
  check(new URL(page.url()).pathname === '/console/queue', `after Retry the browser is on ${page.url()}`);
  const flash = page.locator('p.flash#flash');
  if (check((await flash.count()) === 1, 'no p.flash#flash after Retry')) {
    const text = ((await flash.textContent()) ?? '').trim();
    check(text.length > 0, 'the flash message is empty');
    log(`flash: ${text}`);
  }
  check(
    (await page.locator(`table#dead tr[data-row="${DEAD_ROW}"]`).count()) === 0,
    'the retried row is still in table#dead',
  );
  await step('retried', { row: Number(DEAD_ROW), chat: Number(DEAD_CHAT) });
  await page.reload();
  check(
    (await page.locator(`table#dead tr[data-row="${DEAD_ROW}"]`).count()) === 0,
    'the retried row is back in table#dead after its outcome',
  );
  check((await page.locator('form#retry-all').count()) === 0, 'form#retry-all with no dead row');
});

await scenario('4 chat page', async () => {
  await page.goto(`${BASE}/console/chat`);
  const input = page.locator('form#search input[name=id]');
  if (!check((await input.count()) === 1, 'no form#search input[name=id]')) return;
  check(((await page.locator('form#search').getAttribute('method')) ?? 'get').toLowerCase() === 'get', 'form#search is not GET');
  await input.fill(String(SEARCH_CHAT));
  const res = await submit(page, page.locator('form#search button, form#search [type=submit]').first(), 'GET');
  check(res.status() === 200, `GET /console/chat?id=${SEARCH_CHAT}: want 200, got ${res.status()}`);
  const u = new URL(page.url());
  check(
    u.pathname === '/console/chat' && u.searchParams.get('id') === String(SEARCH_CHAT),
    `the search went to ${page.url()}`,
  );
  const texts = await page.locator('table#decisions tr').evaluateAll((trs) =>
    trs
      .filter((tr) => tr.querySelector('td'))
      .map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.replace(/\s+/g, ' ').trim()).join(' | ')),
  );
  log(`decisions: ${JSON.stringify(texts)}`);
  check(
    texts.some((t) => t.includes('assigned') && t.includes(RULE)),
    `table#decisions has no row with "assigned" and the rule "${RULE}": ${JSON.stringify(texts)}`,
  );
  const explain = ((await page.locator('pre#explain').textContent().catch(() => '')) ?? '').trim();
  check(explain.length > 0, 'pre#explain is empty or missing');
  check(explain.includes(RULE), `pre#explain does not name the rule "${RULE}": ${explain.slice(0, 400)}`);
  await visited(page, 'chat');
  const r = await step('chat', { chat: Number(SEARCH_CHAT), decisions: texts, explain });
  void r;
});

await scenario('2/3 audit', async () => {
  await page.goto(`${BASE}/console/audit`);
  const rows = await page.locator('table#audit tr').evaluateAll((trs) =>
    trs
      .filter((tr) => tr.querySelector('td'))
      .map((tr) => {
        const cell = (c) => (tr.querySelector(`td.${c}`)?.textContent ?? '').trim();
        return { at: cell('at'), who: cell('who'), action: cell('action'), subject: cell('subject'), detail: cell('detail') };
      }),
  );
  log(`audit: ${JSON.stringify(rows)}`);
  const has = (action, subject) =>
    rows.some(
      (r) =>
        r.who.includes(NAME) &&
        r.action.toLowerCase().includes(action) &&
        (subject === null || r.subject.includes(subject) || r.detail.includes(subject)),
    );
  check(has('away', AWAY), `table#audit has no row: who ${NAME}, action away, subject ${AWAY}`);
  check(has('back', AWAY), `table#audit has no row: who ${NAME}, action back, subject ${AWAY}`);
  check(has('retry', null), `table#audit has no row: who ${NAME}, action retry`);
  check(
    rows.every((r) => r.at.length > 0 && r.who.length > 0 && r.action.length > 0),
    'an audit row with an empty td.at, td.who or td.action',
  );
  check(
    !rows.some((r) => r.subject.includes(VICTIM) && r.action.toLowerCase().includes('away')),
    `table#audit lists ${VICTIM} as marked away (a forged POST went through)`,
  );
  await visited(page, 'audit');
});

await scenario('9 queue pages', async () => {
  // The Rust side adds a backlog of a few hundred waiting and dead rows
  // and answers with every row's id in page order.
  const want = await step('backlog');
  const walk = async (table, next) => {
    await page.goto(`${BASE}/console/queue`);
    const seen = [];
    for (let n = 0; n < 50; n++) {
      const ids = await page
        .locator(`table#${table} tr[data-row]`)
        .evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.row)));
      seen.push(...ids);
      const link = page.locator(`a#${next}`);
      if ((await link.count()) === 0) return { seen, pages: n + 1 };
      await link.click();
      await page.waitForLoadState();
    }
    fail(`table#${table}: still a next page after 50`);
    return { seen, pages: 50 };
  };
  for (const [table, next, ids] of [
    ['waiting', 'next-waiting', want.waiting],
    ['dead', 'next-dead', want.dead],
  ]) {
    const { seen, pages: n } = await walk(table, next);
    log(`${table}: ${seen.length} rows on ${n} pages`);
    check(n > 2, `table#${table}: ${n} page(s) for ${ids.length} rows, want several`);
    check(new Set(seen).size === seen.length, `table#${table}: a row shown twice`);
    check(
      JSON.stringify(seen) === JSON.stringify(ids),
      `table#${table}: the pages show ${JSON.stringify(seen)}, want ${JSON.stringify(ids)}`,
    );
  }
});

await scenario('1 sign out', async () => {
  await page.goto(`${BASE}/console/agents`);
  const res = await submit(page, page.locator('form#signout button, form#signout [type=submit]').first());
  check(res.status() === 303, `POST /console/signout: want 303, got ${res.status()}`);
  await redirectsTo(res, '/console/signin');
  check(new URL(page.url()).pathname === '/console/signin', `after sign-out the browser is on ${page.url()}`);
  check(!(await consoleCookie(context)), 'the session cookie is still there after sign-out');
  await page.goto(`${BASE}/console/queue`);
  check(new URL(page.url()).pathname === '/console/signin', `after sign-out /console/queue shows ${page.url()}`);
});

await scenario('7 no secret anywhere', async () => {
  await settled();
  for (const r of received) {
    if (!r.url.startsWith(ORIGIN)) continue;
    const head = JSON.stringify(r.headers);
    const leaked = [...secretsIn(head), ...secretsIn(r.body ?? '')];
    check(leaked.length === 0, `${r.method} ${r.url} (${r.status}) carries secrets ${JSON.stringify(leaked)}`);
  }
  check(foreignRequests.length === 0, `the console pages made requests elsewhere: ${foreignRequests.join(', ')}`);
  check(received.length > 10, `only ${received.length} responses were seen`);
});

await browser.close();
attacker.close();

const failures = Object.fromEntries(Object.entries(scenarios).map(([k, v]) => [k, v.failures]));
process.stdout.write(
  JSON.stringify({
    done: {
      chromium: CHROMIUM,
      scenarios: failures,
      pages,
      shots,
      responses: received.length,
    },
  }) + '\n',
);
stdin.close();
