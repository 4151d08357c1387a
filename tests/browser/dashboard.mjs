// The customer dashboard in real headless Chromium: log in, see the connected app, revoke it with
// the page's own form (CSRF token included by the server), and see it move to "Past apps".
// Usage: node dashboard.mjs BASE_URL USERNAME PASSWORD GRANT_ID [SCREENSHOT]
import { launch, fail, done, accessibility } from './lib.mjs';

const [base, username, password, grantId, screenshot] = process.argv.slice(2);

const { browser, page } = await launch();
// Browsers ask for /favicon.ico on their own (there is none); any other failed load is an error.
const badResponses = [];
page.on('response', (r) => {
  if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') badResponses.push(`${r.status()} ${r.url()}`);
});
try {
  // Not logged in: the dashboard sends us to the login page, and back after logging in.
  await page.goto(`${base}/account/apps`);
  if (!page.url().includes('/login')) fail(`expected the login page, got ${page.url()}`);
  const a11y = await accessibility(page, 'login');
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1:has-text("Your connected apps")');
  if (!page.url().endsWith('/account/apps')) fail(`not back on the dashboard: ${page.url()}`);

  const ids = (section) => page.$$eval(`#${section} section.app`, (els) => els.map((e) => e.dataset.grantId));
  const activeBefore = await ids('active');
  const card = `#active section.app[data-grant-id="${grantId}"]`;
  const cardText = await page.textContent(card);
  a11y.push(...await accessibility(page, 'dashboard'));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  await Promise.all([
    page.waitForNavigation(),
    page.click(`${card} form.revoke button`),
  ]);
  if (!page.url().endsWith(`/account/apps?revoked=${grantId}`)) fail(`after revoking: ${page.url()}`);
  const activeAfter = await ids('active');
  const pastAfter = await ids('past');
  const pastStatus = await page.textContent(`#past section.app[data-grant-id="${grantId}"] dd.status`);
  const confirmation = await page.textContent(`p.flash[data-revoked="${grantId}"]`);

  await Promise.all([
    page.waitForNavigation(),
    page.click(`#past section.app[data-grant-id="${grantId}"] a[href="/account/apps/${grantId}"]`),
  ]);
  const historyText = await page.textContent('table.history');
  a11y.push(...await accessibility(page, 'app history'));
  const errors = page.consoleErrors.filter((e) => !e.startsWith('Failed to load resource'));
  if (errors.length || badResponses.length) fail(`errors: ${[...errors, ...badResponses].join('; ')}`);

  done({ a11y, activeBefore, cardText, activeAfter, pastAfter, pastStatus, confirmation, historyText });
} catch (e) {
  fail(String(e?.stack || e));
} finally {
  await browser.close();
}
