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
