// Smoke check of the landing page and docs in real headless Chromium.
// Usage: node smoke.mjs BASE_URL   (prints JSON, exits non-zero on failure)
import { launch, fail, done, accessibility } from './lib.mjs';

const base = process.argv[2];
const { browser, page } = await launch();
const failures = [];
page.on('response', (r) => {
  if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') failures.push(`${r.status()} ${r.url()}`);
});
try {
  await page.goto(`${base}/`);
  const title = await page.title();
  if (title !== 'Consent service') fail(`landing title: ${title}`);
  const a11y = await accessibility(page, 'landing');
  await page.goto(`${base}/docs/`);
  await page.waitForSelector('.swagger-ui .info .title', { timeout: 15000 });
  const apiTitle = await page.textContent('.swagger-ui .info .title');
  if (!apiTitle.includes('Consent service')) fail(`swagger title: ${apiTitle}`);
  // The CSP allows no inline style: Swagger UI must not need one (it would log a refusal).
  const errors = page.consoleErrors.filter((e) => !e.startsWith('Failed to load resource'));
  if (errors.length || failures.length) fail(`errors: ${[...errors, ...failures].join('; ')}`);
  done({ a11y, title, apiTitle });
} finally {
  await browser.close();
}
