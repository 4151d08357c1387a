// The consent page as a customer uses it in real headless Chromium: the login page and the
// consent page pass axe-core (WCAG 2.1 AA) and reflow at 320 px; the summary sentence follows
// the customer's narrowing (the page's own script); a quick period choice fills in its dates.
// Usage: node consent-page.mjs AUTHORIZE_URL REDIRECT_URI USERNAME PASSWORD [SCREENSHOT]
import { launch, fail, done, accessibility, captureCallback } from './lib.mjs';

const [authorizeUrl, redirectUri, username, password, screenshot] = process.argv.slice(2);
const { browser, page } = await launch();
const failures = [];
page.on('response', (r) => {
  if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') failures.push(`${r.status()} ${r.url()}`);
});
try {
  const callback = await captureCallback(page, redirectUri);
  await page.setViewportSize({ width: 800, height: 900 });
  await page.goto(authorizeUrl);
  await page.waitForSelector('form[action="/login"]');
  const a11y = await accessibility(page, 'login');
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForSelector('#summary'), page.click('button[type=submit]')]);
  a11y.push(...await accessibility(page, 'consent'));
  const summary = async () => (await page.textContent('#summary')).trim();
  const initial = await summary();

  const accounts = await page.$$eval('input[name=account]', (els) => els.map((e) => e.value));
  for (const value of accounts.slice(1)) await page.uncheck(`input[name=account][value="${value}"]`);
  const oneAccount = await summary();

  await page.check('input[name=period][value=last_3_months]');
  const from = await page.inputValue('input[name=transactions_from]');
  const until = await page.inputValue('input[name=transactions_until]');
  const period = await summary();

  const merchant = page.locator('input[name=merchant]').first();
  const merchantId = await merchant.getAttribute('value');
  await merchant.check();
  const withMerchant = await summary();

  // Typing a date goes back to "these dates".
  await page.fill('input[name=transactions_until]', until);
  const datesChecked = await page.isChecked('input[name=period][value=dates]');
  await page.check('input[name=period][value=last_3_months]');

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  await page.click('button[value=approve]');
  await page.waitForFunction(() => document.body.innerText.includes('callback received'));
  const callbackUrl = callback();
  if (!callbackUrl) fail('no callback');
  const errors = page.consoleErrors.filter((e) => !e.startsWith('Failed to load resource'));
  if (errors.length || failures.length) fail(`errors: ${[...errors, ...failures].join('; ')}`);
  done({ a11y, initial, oneAccount, period, from, until, merchantId, withMerchant, datesChecked, callbackUrl });
} catch (e) {
  fail(String(e?.stack || e));
} finally {
  await browser.close();
}
