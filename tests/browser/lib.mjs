// Small helpers for the dashboard's browser scenarios: Playwright (playwright-core) driving Debian's chromium.
// Every browser launched here is closed, and its profile directory removed, by closeAll() (which
// fail() runs too), so a failed or aborted scenario leaves no chromium and no /tmp profile behind.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** How long closing a browser may take before its profile is removed anyway. */
const CLOSE_WITHIN_MS = 4000;

/** The browsers launched and not closed yet. */
const launched = new Set();

/** Launches headless chromium with a fresh profile; returns {context, close}. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'celerity-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  const handle = {
    context,
    async close() {
      if (!launched.delete(handle)) return;
      const timeout = new Promise((r) => setTimeout(r, CLOSE_WITHIN_MS).unref());
      await Promise.race([context.close().catch(() => {}), timeout]);
      removeProfile(profile);
    },
  };
  launched.add(handle);
  // Last resort for a process.exit() that did not close it: Playwright's own exit handler (added
  // by the launch above, so it runs before this one) kills chromium; this one removes the profile.
  process.on('exit', () => removeProfile(profile));
  return handle;
}

/** Closes every browser still open and removes its profile. */
export async function closeAll() {
  await Promise.all([...launched].map((handle) => handle.close()));
}

function removeProfile(profile) {
  try { rmSync(profile, { recursive: true, force: true, maxRetries: 3 }); } catch (_) { /* Best effort at exit. */ }
}

/** A new page (in its own context when httpCredentials are given) that records console errors. */
export async function newPage(browser, { httpCredentials } = {}) {
  let page;
  if (httpCredentials) {
    const ctx = await browser.context.browser()?.newContext({ httpCredentials, viewport: { width: 1280, height: 800 } });
    if (ctx) page = await ctx.newPage();
    else {
      page = await browser.context.newPage();
      await page.setExtraHTTPHeaders({ Authorization: 'Basic ' + Buffer.from(httpCredentials.username + ':' + httpCredentials.password).toString('base64') });
    }
  } else page = await browser.context.newPage();
  page.consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') page.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => page.consoleErrors.push(String(e)));
  return page;
}

/** Throws when `page` has logged a console error (or thrown) so far; `where` names the page. */
export function expectNoConsoleErrors(page, where) {
  if (page.consoleErrors.length) throw new Error(`console errors on ${where}: ${page.consoleErrors.join(' | ')}`);
}

export async function screenshot(page, dir, name) {
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, name + '.png') });
}

/** Waits until fn() (run in the page) is truthy, or fails after ms with what. No bare sleeps. */
export async function waitFor(page, what, fn, arg, ms = 15000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
  } catch (e) {
    throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  }
}

/** Waits for the SPA view to have rendered its first data. */
export async function waitView(page, view, ms = 15000) {
  await waitFor(page, `view ${view} ready`, (v) => {
    const m = document.querySelector('#main');
    return m && m.dataset.view === v && m.dataset.ready === '1';
  }, view, ms);
}

/** Waits until the page's live stream (EventSource) is open: what the page learns from now on comes live. */
export async function waitLive(page, ms = 15000) {
  await waitFor(page, '#live-status[data-state=live]', () => !!document.querySelector('#live-status[data-state=live]'), null, ms);
}

/** Prints the failure, closes every browser and exits 1. */
export async function fail(msg) {
  console.error('FAIL: ' + msg);
  await closeAll();
  process.exit(1);
}
