// Smoke check of the landing page and docs in real headless Chromium.
// Usage: node smoke.mjs BASE_URL   (prints JSON, exits non-zero on failure)
import { launch, fail, done } from './lib.mjs';

const base = process.argv[2];
const { browser, page } = await launch();
try {
  await page.goto(`${base}/`);
  const title = await page.title();
  if (title !== 'Consent service') fail(`landing title: ${title}`);
  await page.goto(`${base}/docs/`);
  await page.waitForSelector('.swagger-ui .info .title', { timeout: 15000 });
  const apiTitle = await page.textContent('.swagger-ui .info .title');
  if (!apiTitle.includes('Consent service')) fail(`swagger title: ${apiTitle}`);
  done({ title, apiTitle });
} finally {
  await browser.close();
}
