// Upstream login end to end in real headless Chromium: an app's authorization request sends the
// customer to the login page, whose button leads to the bank's provider (npm oidc-provider: its
// own login and consent pages) and back to the consent page; the customer allows, and the
// dashboard lists the app. The login page (with the provider's button) passes axe-core.
// Usage: node upstream-login.mjs BASE_URL AUTHORIZE_URL REDIRECT_URI USERNAME
import { launch, fail, done, accessibility, captureCallback } from './lib.mjs';

const [base, authorizeUrl, redirectUri, username] = process.argv.slice(2);
const { browser, page } = await launch();
try {
  const callback = await captureCallback(page, redirectUri);
  await page.goto(authorizeUrl);
  if (!page.url().includes('/login')) fail(`expected the login page, got ${page.url()}`);
  const a11y = await accessibility(page, 'login with a provider');
  await Promise.all([page.waitForURL((u) => !u.href.startsWith(base)), page.click('#provider-login')]);
  const providerUrl = page.url();
  // The provider's own pages (development interactions): any password.
  await page.fill('input[name=login]', username);
  await page.fill('input[name=password]', 'anything');
  await Promise.all([page.waitForLoadState(), page.click('button[type=submit]')]);
  if (!page.url().startsWith(base)) {
    // The provider asks to confirm what it shares with this service.
    await Promise.all([page.waitForURL((u) => u.href.startsWith(base)), page.click('button[type=submit]')]);
  }
  await page.waitForSelector('#summary');
  const consentUrl = page.url();
  const summary = (await page.textContent('#summary')).trim();
  await page.click('button[value=approve]');
  await page.waitForFunction(() => document.body.innerText.includes('callback received'));
  const callbackUrl = callback();
  if (!callbackUrl) fail('no callback');
  await page.goto(`${base}/account/apps`);
  await page.waitForSelector('h1:has-text("Your connected apps")');
  const loggedInAs = (await page.textContent('p.muted')).trim();
  const apps = await page.$$eval('#active section.app', (els) => els.map((e) => e.dataset.grantId));
  done({ a11y, providerUrl, consentUrl, summary, callbackUrl, loggedInAs, apps });
} catch (e) {
  fail(String(e?.stack || e));
} finally {
  await browser.close();
}
