// Scenario driver: node run.mjs <scenario> --url <base> [--user u --password p] [--task id] [--shots dir]
// Prints `READY <step>` when the orchestrator must act; reads `GO ...` lines from stdin.
// Closing stdin before the scenario ends aborts it: the browser is closed and its profile removed.
import { createInterface } from 'node:readline';
import { launch, closeAll, newPage, screenshot, waitFor, waitView, waitLive, expectNoConsoleErrors, fail } from './lib.mjs';

const argv = process.argv.slice(2);
const scenario = argv[0];
const opt = (name) => { const i = argv.indexOf('--' + name); return i >= 0 ? argv[i + 1] : undefined; };
const base = (opt('url') || '').replace(/\/$/, '');
const user = opt('user'), password = opt('password'), shots = opt('shots'), taskArg = opt('task');
if (!scenario || !base) await fail('usage: node run.mjs <scenario> --url <base> [--user u --password p] [--task id] [--shots dir]');

/** Ends the process once: closes every browser (and its profile), then exits with `code`. */
let ending = null;
function end(code, message) {
  if (!ending) {
    ending = (async () => {
      if (message) console.error(message);
      await closeAll();
      process.exit(code);
    })();
  }
  return ending;
}

const rl = createInterface({ input: process.stdin });
const lines = [];
let waiter = null;
rl.on('line', (l) => { lines.push(l.trim()); if (waiter) { const w = waiter; waiter = null; w(); } });
rl.on('close', () => end(1, `FAIL: ${scenario}: stdin closed before the scenario ended`));
/** Prints READY <step> and waits for a `GO ...` line; returns its words after GO. */
async function ready(step, ms = 120000) {
  console.log('READY ' + step);
  const deadline = Date.now() + ms;
  for (;;) {
    const i = lines.findIndex((l) => l.startsWith('GO'));
    if (i >= 0) return lines.splice(i, 1)[0].split(/\s+/).slice(1);
    if (Date.now() > deadline) throw new Error(`no GO for ${step} within ${ms} ms`);
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
    if (!taskArg) throw new Error('pages needs --task <id of a chord body>');
    const page = await newPage(b);
    await login(page);
    await open(page, '#/', 'overview'); await screenshot(page, shots, 'overview');
    await shoot(page, '#/workers', 'workers', 'tr[data-testid=worker-row][data-online=true]');
    await shoot(page, '#/tasks', 'tasks', 'tr[data-testid=task-row]');
    // The chord's body: its page, then its canvas.
    await open(page, '#/tasks/' + encodeURIComponent(taskArg), 'task');
    await waitFor(page, 'the page of ' + taskArg, (id) => document.querySelector('#task-detail')?.dataset.taskId === id, taskArg);
    await screenshot(page, shots, 'task');
    const root = await page.$eval('#task-canvas-link', (a) => a.getAttribute('href'));
    await page.goto(base + '/' + root); await waitView(page, 'canvas'); await screenshot(page, shots, 'canvas');
    await shoot(page, '#/queues', 'queues', 'tr[data-testid=queue-row]');
    await shoot(page, '#/dead-letters', 'dead-letters', 'tr[data-testid=dl-row]');
    expectNoConsoleErrors(page, 'the dashboard');
    const lp = await newPage(b);
    await lp.goto(base + '/login'); await screenshot(lp, shots, 'login');
    expectNoConsoleErrors(lp, 'the login page');
  },
  async 'live-task'(b) {
    const page = await newPage(b); await login(page);
    await open(page, '#/tasks', 'tasks');
    await waitLive(page);
    const [id] = await ready('publish');
    await waitFor(page, 'row for ' + id, (i) => !!document.querySelector(`tr[data-task-id="${i}"]`), id, 30000);
  },
  async chord(b) {
    const page = await newPage(b); await login(page);
    await open(page, '#/tasks', 'tasks');
    await waitLive(page);
    // GO <canvas root> <body id> <header size>, sent while the header's members still sleep.
    const [root, body, sizeWord] = await ready('chord');
    const size = Number(sizeWord);
    await open(page, '#/canvas/' + root, 'canvas');
    await waitLive(page);
    // Each poll records what the graph shows on its way to done, so the scenario proves that the
    // page saw the chord running and its count climb, not only its end.
    const handle = await waitFor(page, `the chord ${size} of ${size} done and all its nodes SUCCESS`, ({ body, size }) => {
      const seen = window.__chordSeen ||= { running: [], counts: [] };
      const nodes = [...document.querySelectorAll('[data-testid=canvas-node]')];
      for (const n of nodes) if (n.dataset.state !== 'SUCCESS' && !seen.running.includes(n.dataset.state)) seen.running.push(n.dataset.state);
      const chords = [...document.querySelectorAll('[data-testid=chord-progress]')];
      for (const c of chords) if (c.dataset.size !== '' && !seen.counts.includes(c.textContent)) seen.counts.push(c.textContent);
      const bodyNode = document.querySelector(`[data-testid=canvas-node][data-task-id="${body}"]`);
      const done = chords.length === 1 && Number(chords[0].dataset.done) === size && Number(chords[0].dataset.size) === size;
      return done && bodyNode?.dataset.state === 'SUCCESS' && nodes.every((x) => x.dataset.state === 'SUCCESS') && seen;
    }, { body, size }, 60000);
    const seen = await handle.jsonValue();
    if (!seen.running.length) throw new Error('the graph never showed a node that was not SUCCESS yet');
    const partial = seen.counts.filter((t) => { const m = /(\d+) of (\d+) done/.exec(t); return m && Number(m[1]) > 0 && Number(m[1]) < size; });
    if (!partial.length) throw new Error(`the chord's progress never showed a count between 0 and ${size}: ${seen.counts.join(' | ')}`);
    if (!seen.counts.some((t) => t.includes(`${size} of ${size} done`))) throw new Error(`the chord's progress never read "${size} of ${size} done": ${seen.counts.join(' | ')}`);
    console.error(`chord: saw ${seen.running.join(', ')} nodes and progress ${seen.counts.join(' → ')}`);
    expectNoConsoleErrors(page, 'the canvas page');
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
    expectNoConsoleErrors(page, 'the login page');
    await page.fill('#login-username', user || 'admin'); await page.fill('#login-password', 'definitely-wrong');
    await page.click('#login-submit');
    await waitFor(page, '#login-error visible', () => { const e = document.querySelector('#login-error'); return e && !e.hidden; }, null, 10000);
    expectNoConsoleErrors(page, 'the login page after a wrong password');
    await screenshot(page, shots, 'login-failed');
    await login(page);
    await waitView(page, 'overview');
    expectNoConsoleErrors(page, 'the overview after logging in');
  },
  async 'read-only'(b) {
    const page = await newPage(b); await login(page);
    await open(page, '#/workers', 'workers');
    await waitFor(page, 'read-only badge', () => !document.querySelector('#read-only-badge').hidden, null, 5000);
    // What each page shows once rendered, so "no control" is counted on a full page, not an empty one.
    const rendered = {
      '#/workers': 'tr[data-testid=worker-row][data-online=true]',
      '#/queues': '#queues-table, #rate-limits-table',
      '#/dead-letters': '#dl-table, #dl-empty',
    };
    for (const [hash, view] of [['#/workers', 'workers'], ['#/queues', 'queues'], ['#/dead-letters', 'dead-letters']]) {
      await open(page, hash, view);
      await waitFor(page, `${rendered[hash]} on ${hash}`, (sel) => !!document.querySelector(sel), rendered[hash]);
      const n = await page.$$eval('.control, [data-testid^=worker-shutdown], #rate-limit-form, #dl-requeue-all', (e) => e.filter((x) => x.offsetParent !== null).length);
      if (n) throw new Error(`${n} controls visible on ${hash} in read-only mode`);
    }
  },
};

const run = scenarios[scenario];
if (!run) await fail('unknown scenario ' + scenario + '; one of ' + Object.keys(scenarios).join(', '));
let browser;
try {
  browser = await launch();
  await run(browser);
} catch (e) {
  await end(1, 'FAIL: ' + scenario + ': ' + (e && e.message || e));
}
if (!ending) console.log('PASS ' + scenario);
await end(0);
