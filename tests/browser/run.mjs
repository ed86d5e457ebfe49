// Scenario driver: node run.mjs <scenario> --url <base> [--user u --password p] [--shots dir]
// Prints `READY <step>` when the orchestrator must act; reads `GO ...` lines from stdin.
import { createInterface } from 'node:readline';
import { launch, newPage, screenshot, waitFor, waitView, fail } from './lib.mjs';

const argv = process.argv.slice(2);
const scenario = argv[0];
const opt = (name) => { const i = argv.indexOf('--' + name); return i >= 0 ? argv[i + 1] : undefined; };
const base = (opt('url') || '').replace(/\/$/, '');
const user = opt('user'), password = opt('password'), shots = opt('shots');
if (!scenario || !base) fail('usage: node run.mjs <scenario> --url <base> [--user u --password p] [--shots dir]');

const rl = createInterface({ input: process.stdin });
const lines = [];
let waiter = null;
rl.on('line', (l) => { lines.push(l.trim()); if (waiter) { const w = waiter; waiter = null; w(); } });
/** Prints READY <step> and waits for a `GO ...` line; returns its words after GO. */
async function ready(step, ms = 120000) {
  console.log('READY ' + step);
  const deadline = Date.now() + ms;
  for (;;) {
    const i = lines.findIndex((l) => l.startsWith('GO'));
    if (i >= 0) return lines.splice(i, 1)[0].split(/\s+/).slice(1);
    if (Date.now() > deadline) fail(`no GO for ${step} within ${ms} ms`);
    await new Promise((r) => { waiter = r; setTimeout(r, 500); });
  }
}

async function login(page) {
  if (!user) return;
  await page.goto(base + '/login');
  await page.fill('#login-username', user);
  await page.fill('#login-password', password || '');
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login'), { timeout: 10000 }), page.click('#login-submit')]);
}

async function open(page, hash, view) {
  await page.goto(base + '/' + hash);
  await waitView(page, view);
}

/** Opens a view, waits until it shows an element matching `row`, and takes its screenshot. */
async function shoot(page, hash, view, row) {
  await open(page, hash, view);
  await waitFor(page, `${row} on ${hash}`, (sel) => !!document.querySelector(sel), row);
  await screenshot(page, shots, view);
}

const scenarios = {
  async pages(b) {
    const page = await newPage(b);
    await login(page);
    await open(page, '#/', 'overview'); await screenshot(page, shots, 'overview');
    await shoot(page, '#/workers', 'workers', 'tr[data-testid=worker-row][data-online=true]');
    await shoot(page, '#/tasks', 'tasks', 'tr[data-testid=task-row]');
    // The newest task is the chord's body: its page, then its canvas.
    const task = await page.$eval('tr[data-testid=task-row]', (r) => r.dataset.taskId);
    await open(page, '#/tasks/' + task, 'task'); await screenshot(page, shots, 'task');
    const root = await page.$eval('#task-canvas-link', (a) => a.getAttribute('href'));
    await page.goto(base + '/' + root); await waitView(page, 'canvas'); await screenshot(page, shots, 'canvas');
    await shoot(page, '#/queues', 'queues', 'tr[data-testid=queue-row]');
    await shoot(page, '#/dead-letters', 'dead-letters', 'tr[data-testid=dl-row]');
    if (page.consoleErrors.length) fail('console errors: ' + page.consoleErrors.join(' | '));
    const lp = await newPage(b);
    await lp.goto(base + '/login'); await screenshot(lp, shots, 'login');
  },
  async 'live-task'(b) {
    const page = await newPage(b); await login(page);
    await open(page, '#/tasks', 'tasks');
    const [id] = await ready('publish');
    await waitFor(page, 'row for ' + id, (i) => !!document.querySelector(`tr[data-task-id="${i}"]`), id, 30000);
  },
  async chord(b) {
    const page = await newPage(b); await login(page);
    const [root] = await ready('chord');
    await open(page, '#/canvas/' + root, 'canvas');
    await waitFor(page, 'all canvas nodes SUCCESS', () => {
      const n = [...document.querySelectorAll('[data-testid=canvas-node]')];
      const c = [...document.querySelectorAll('[data-testid=chord-progress]')];
      return n.length > 0 && n.every((x) => x.dataset.state === 'SUCCESS') && c.every((x) => x.dataset.size !== '' && Number(x.dataset.done) >= Number(x.dataset.size));
    }, null, 60000);
    await screenshot(page, shots, 'canvas');
  },
  async 'rate-limit'(b) {
    const page = await newPage(b); await login(page);
    const [task, worker] = await ready('rate-limit');
    await open(page, '#/queues', 'queues');
    await page.fill('#rl-task', task); await page.fill('#rl-rate', '7/s');
    if (worker) { await page.selectOption('#rl-scope', 'worker'); await page.selectOption('#rl-worker', worker); }
    await page.click('#rl-submit');
    await waitFor(page, 'an ok reply toast', () => !!document.querySelector('[data-testid=toast].ok'), null, 15000);
    await ready('applied');
  },
  async 'dead-letter'(b) {
    const page = await newPage(b); await login(page);
    const [seq, id] = await ready('dead-letter');
    await open(page, '#/dead-letters/' + seq, 'letter');
    await page.click('#letter-requeue');
    await waitFor(page, 'requeued toast', () => !!document.querySelector('#requeued-task-link'), null, 15000);
    await open(page, '#/tasks/' + id, 'task');
    await waitFor(page, 'task SUCCESS', () => document.querySelector('#task-detail')?.dataset.state === 'SUCCESS', null, 60000);
  },
  async login(b) {
    const page = await newPage(b);
    await page.goto(base + '/login');
    await page.fill('#login-username', user || 'admin'); await page.fill('#login-password', 'definitely-wrong');
    await page.click('#login-submit');
    await waitFor(page, '#login-error visible', () => { const e = document.querySelector('#login-error'); return e && !e.hidden; }, null, 10000);
    await screenshot(page, shots, 'login-failed');
    await login(page);
    await waitView(page, 'overview');
  },
  async 'read-only'(b) {
    const page = await newPage(b); await login(page);
    await open(page, '#/workers', 'workers');
    await waitFor(page, 'read-only badge', () => !document.querySelector('#read-only-badge').hidden, null, 5000);
    for (const [hash, view] of [['#/workers', 'workers'], ['#/queues', 'queues'], ['#/dead-letters', 'dead-letters']]) {
      await open(page, hash, view);
      const n = await page.$$eval('.control, [data-testid^=worker-shutdown], #rate-limit-form, #dl-requeue-all', (e) => e.filter((x) => x.offsetParent !== null).length);
      if (n) fail(`${n} controls visible on ${hash} in read-only mode`);
    }
  },
};

const run = scenarios[scenario];
if (!run) fail('unknown scenario ' + scenario + '; one of ' + Object.keys(scenarios).join(', '));
const b = await launch();
try {
  await run(b);
  console.log('PASS ' + scenario);
} catch (e) {
  console.error('FAIL: ' + scenario + ': ' + (e && e.message || e));
  await b.close();
  process.exit(1);
}
await b.close();
rl.close();
process.exit(0);
