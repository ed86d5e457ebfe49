// Small helpers for the dashboard's browser scenarios: Playwright (playwright-core) driving Debian's chromium.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Launches headless chromium with a fresh profile; returns {browser, close}. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'celerity-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async close() { await context.close().catch(() => {}); rmSync(profile, { recursive: true, force: true }); },
  };
}

/** A new page (in its own context when httpCredentials are given) that records console errors. */
export async function newPage(launched, { httpCredentials } = {}) {
  let page;
  if (httpCredentials) {
    const ctx = await launched.context.browser()?.newContext({ httpCredentials, viewport: { width: 1280, height: 800 } });
    if (ctx) page = await ctx.newPage();
    else {
      page = await launched.context.newPage();
      await page.setExtraHTTPHeaders({ Authorization: 'Basic ' + Buffer.from(httpCredentials.username + ':' + httpCredentials.password).toString('base64') });
    }
  } else page = await launched.context.newPage();
  page.consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') page.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => page.consoleErrors.push(String(e)));
  return page;
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

export function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}
