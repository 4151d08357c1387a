// Shared launcher: Debian's Chromium, headless, no background network, fresh temporary profile.
import { chromium } from 'playwright-core';

export async function launch() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.consoleErrors = errors;
  return { browser, context, page };
}

export function fail(message) {
  console.log(JSON.stringify({ ok: false, error: message }));
  process.exit(1);
}

export function done(result) {
  console.log(JSON.stringify({ ok: true, ...result }));
}

// Accessibility: axe-core (WCAG 2.1 A and AA rules, and axe's best practices) on the page as it
// is now, then the same page at 320 CSS pixels wide, which must not scroll sideways (WCAG 1.4.10
// reflow). Returns one line per problem; an empty list is a pass. axe is evaluated through the
// DevTools protocol, which the page's CSP does not govern (the page itself still loads no
// script but its own).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export async function accessibility(page, name) {
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
      resultTypes: ['violations'],
    });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  });
  const problems = violations.map((v) => `${name}: ${v}`);
  const size = page.viewportSize();
  await page.setViewportSize({ width: 320, height: 640 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  if (overflow > 0) problems.push(`${name}: scrolls sideways by ${overflow}px at 320px wide`);
  if (size) await page.setViewportSize(size);
  return problems;
}

/** Captures navigations to `redirectUri`, where nothing listens; returns a function that gives
 * the last URL captured (undefined before the callback). */
export async function captureCallback(page, redirectUri) {
  let url;
  await page.route(`${new URL(redirectUri).origin}/**`, async (route) => {
    url = route.request().url();
    await route.fulfill({ status: 200, contentType: 'text/plain', body: 'callback received' });
  });
  return () => url;
}
