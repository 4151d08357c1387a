// Developer portal in real headless Chromium: a developer signs up, creates a sandbox client and
// sees its secret once, submits KYC; two staff members log in and approve it.
// Usage: node portal.mjs BASE_URL PASSWORD CODE_A CODE_B   (staff ops-a and ops-b must exist with
// PASSWORD; CODE_A and CODE_B are their enrolment codes)
import { createHmac } from 'node:crypto';
import { launch, fail, done, accessibility } from './lib.mjs';

const [base, password, ...enrolmentCodes] = process.argv.slice(2);
const enrolmentCode = { 'ops-a': enrolmentCodes[0], 'ops-b': enrolmentCodes[1] };
const { browser, page } = await launch();
const text = async (p, sel) => (await p.textContent(sel)).trim();
// axe-core and 320 px reflow problems on every kind of portal page (checked once each).
const a11y = [];
const check = async (p, name) => a11y.push(...await accessibility(p, name));
// HTTP failures other than the browser's own favicon probe (checked at the end).
const failures = [];
page.on('response', (r) => {
  if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) failures.push(`${r.status()} ${r.url()}`);
});

// RFC 6238 as an authenticator app computes it from a base32 secret (HMAC-SHA-1, 6 digits, 30 s).
function totp(secret, stepsAhead = 0) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bits = [...secret.toUpperCase()].map((c) => alphabet.indexOf(c).toString(2).padStart(5, '0')).join('');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + stepsAhead));
  const digest = createHmac('sha1', key).update(counter).digest();
  const value = digest.readUInt32BE(digest[19] & 0x0f) & 0x7fffffff;
  return String(value % 1000000).padStart(6, '0');
}

async function staffReview(username) {
  const context = await browser.newContext();
  const p = await context.newPage();
  await p.goto(`${base}/developers/staff/login`);
  if (username === 'ops-a') await check(p, 'staff login');
  await p.fill('input[name=username]', username);
  await p.fill('input[name=password]', password);
  // The first login owes an authenticator: the password leads to enrolment, nothing else.
  await Promise.all([p.waitForURL(`${base}/developers/staff/second-factor`), p.click('button[type=submit]')]);
  await p.goto(`${base}/developers/staff`);
  if (!p.url().endsWith('/developers/staff/login')) fail(`${username}: staff pages reachable before the second factor: ${p.url()}`);
  await p.goto(`${base}/developers/staff/second-factor`);
  // The password alone does not enrol: the operator's one-time enrolment code is asked for.
  await p.fill('input[name=enrolment_code]', 'aaaa-bbbb-cccc-dddd');
  await Promise.all([p.waitForLoadState(), p.click('button[type=submit]')]);
  if (!(await text(p, '#error')).includes('enrolment code')) fail(`${username}: a wrong enrolment code was not refused`);
  if (await p.locator('#secret').count() !== 0) fail(`${username}: a secret shown for a wrong enrolment code`);
  await p.fill('input[name=enrolment_code]', enrolmentCode[username]);
  await Promise.all([p.waitForLoadState(), p.click('button[type=submit]')]);
  const secret = await text(p, '#secret');
  if (username === 'ops-a') await check(p, 'staff enrolment');
  if (!/^[A-Z2-7]{32}$/.test(secret)) fail(`${username}: secret ${secret}`);
  await p.fill('input[name=code]', '000000' === totp(secret) ? '111111' : '000000');
  await Promise.all([p.waitForLoadState(), p.click('button[type=submit]')]);
  if (!(await text(p, '#error')).includes('wrong')) fail(`${username}: a wrong code was not refused`);
  if (await text(p, '#secret') !== secret) fail(`${username}: the secret changed after a wrong code`);
  await p.fill('input[name=code]', totp(secret));
  await Promise.all([p.waitForLoadState(), p.click('button[type=submit]')]);
  if (await p.locator('#recovery-codes li').count() !== 10) fail(`${username}: recovery codes not shown`);
  if (username === 'ops-a') await check(p, 'recovery codes');
  await Promise.all([p.waitForURL(`${base}/developers/staff`), p.click('#continue')]);
  if (username === 'ops-a') await check(p, 'staff queue');
  const link = p.locator('#queue a', { hasText: 'browser@fintech.example' });
  if (await link.count() !== 1) fail(`${username}: submission not in the queue`);
  await Promise.all([p.waitForLoadState(), link.click()]);
  if (await text(p, '#legal-name') !== 'Browser Fintech GmbH') fail('staff sees the decrypted legal name');
  if (username === 'ops-a') await check(p, 'KYC review');
  await p.selectOption('select[name=decision]', 'approve');
  await p.fill('textarea[name=justification]', `${username}: register entry and documents match`);
  await Promise.all([p.waitForLoadState(), p.click('form[action$="/review"] button[type=submit]')]);
  const reviews = await text(p, '#reviews');
  if (!reviews.includes(`${username}: register entry`)) fail(`${username}: review not listed: ${reviews}`);
  const status = await text(p, '#kyc-status');
  await context.close();
  return { reviews, status, secret };
}

// A later login of a staff member with an authenticator: password, then the code page (the
// next step's code: this step's may have been used at enrolment).
async function staffLogin(username, secret) {
  const context = await browser.newContext();
  const p = await context.newPage();
  await p.goto(`${base}/developers/staff/login`);
  await p.fill('input[name=username]', username);
  await p.fill('input[name=password]', password);
  await Promise.all([p.waitForURL(`${base}/developers/staff/login/second-factor`), p.click('button[type=submit]')]);
  await p.fill('input[name=code]', totp(secret, 1));
  await Promise.all([p.waitForURL(`${base}/developers/staff`), p.click('button[type=submit]')]);
  return { p, context };
}

try {
  // Sign up (double-submit CSRF token in the form).
  await page.goto(`${base}/developers/login`);
  await check(page, 'developer login');
  await page.goto(`${base}/developers/signup`);
  await check(page, 'sign-up');
  await page.fill('input[name=email]', 'Browser@Fintech.example');
  await page.fill('input[name=display_name]', 'Browser Dev');
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(`${base}/developers/kyc`), page.click('button[type=submit]')]);

  // A sandbox client: the secret is shown once.
  await page.goto(`${base}/developers/clients/new`);
  await check(page, 'new client');
  await page.fill('input[name=name]', 'Browser budget app');
  await page.fill('textarea[name=redirect_uris]', 'http://127.0.0.1:9000/callback');
  await Promise.all([page.waitForLoadState(), page.click('form[action="/developers/clients/new"] button[type=submit]')]);
  const secret = await text(page, '#client-secret');
  if (!secret.startsWith('cs_')) fail(`secret: ${secret}`);
  const clientId = await text(page, '#client-id');
  await check(page, 'client secret');
  await page.goto(`${base}/developers/clients/${clientId}`);
  if (await page.locator('#client-secret').count() !== 0) fail('secret shown twice');
  await check(page, 'client');
  for (const path of ['/developers', '/developers/clients', '/developers/second-factor']) {
    await page.goto(`${base}${path}`);
    await check(page, path);
  }
  if ((await page.content()).includes(secret)) fail('secret in the detail page');

  // A production client is refused before KYC approval.
  await page.goto(`${base}/developers/clients/new`);
  await page.fill('input[name=name]', 'Too early');
  await page.selectOption('select[name=environment]', 'production');
  await page.fill('textarea[name=redirect_uris]', 'https://app.example.com/cb');
  const [refused] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'),
    page.click('form[action="/developers/clients/new"] button[type=submit]')]);
  if (refused.status() !== 403) fail(`production before KYC: ${refused.status()}`);

  // KYC.
  await page.goto(`${base}/developers/kyc`);
  await check(page, 'KYC form');
  await page.fill('input[name=legal_name]', 'Browser Fintech GmbH');
  await page.fill('input[name=registration_number]', 'HRB 98765');
  await page.fill('input[name=country]', 'DE');
  await page.fill('textarea[name=address]', 'Hauptstrasse 1, 10115 Berlin');
  await page.fill('input[name=contact_person]', 'Carla Compliance');
  await page.selectOption('select[name=doc0_kind]', 'certificate_of_incorporation');
  await page.fill('input[name=doc0_filename]', 'handelsregister.pdf');
  await page.fill('input[name=doc0_sha256]', 'b'.repeat(64));
  await Promise.all([page.waitForLoadState(), page.click('button[value=submit]')]);
  const submitted = await text(page, '#kyc-status');
  if (submitted !== 'submitted') fail(`kyc status after submit: ${submitted}`);

  // Two staff members approve.
  const first = await staffReview('ops-a');
  if (first.status !== 'submitted') fail(`one approval must not approve: ${first.status}`);
  const second = await staffReview('ops-b');
  if (second.status !== 'approved') fail(`two approvals approve: ${second.status}`);

  // Four eyes on a suspension: ops-a asks, cannot decide it, ops-b approves.
  const a = await staffLogin('ops-a', first.secret);
  await a.p.goto(`${base}/developers/staff/credentials`);
  await check(a.p, 'staff credentials');
  await a.p.goto(`${base}/developers/staff/approvals`);
  await check(a.p, 'approvals');
  const ask = 'form[action="/developers/staff/suspensions"]';
  await a.p.fill(`${ask} input[name=client_id]`, clientId);
  await a.p.fill(`${ask} input[name=justification]`, 'Client reported for scraping accounts, suspend now');
  await Promise.all([a.p.waitForLoadState(), a.p.click(`${ask} button[type=submit]`)]);
  const mine = a.p.locator('#approvals tr', { hasText: clientId });
  if (await mine.count() !== 1) fail('the suspension request is not listed');
  if (await mine.locator('form').count() !== 0) fail('the requester can decide their own request');
  await a.context.close();
  const b = await staffLogin('ops-b', second.secret);
  await b.p.goto(`${base}/developers/staff/approvals`);
  await check(b.p, 'approvals, to decide');
  const theirs = b.p.locator('#approvals tr', { hasText: clientId });
  await theirs.locator('input[name=justification]').fill('Evidence in the ticket checked, approved');
  await Promise.all([b.p.waitForLoadState(), theirs.locator('button[value=approve]').click()]);
  const decided = (await b.p.locator('#approvals tr', { hasText: clientId }).locator('td.status').textContent()).trim();
  if (decided !== 'approved') fail(`suspension after the second staff member: ${decided}`);
  await b.context.close();
  await page.goto(`${base}/developers/clients/${clientId}`);
  if (!(await page.content()).includes('suspended')) fail('the developer does not see the client suspended');

  await page.goto(`${base}/developers/kyc`);
  const kycStatus = await text(page, '#kyc-status');
  // Resource-load messages are the HTTP statuses checked through `failures`.
  const jsErrors = page.consoleErrors.filter((e) => !e.startsWith('Failed to load resource'));
  if (jsErrors.length) fail(`console errors: ${jsErrors.join('; ')}`);
  if (failures.length !== 1 || !failures[0].startsWith('403 ')) fail(`unexpected HTTP failures: ${failures}`);
  done({ a11y, clientId, kycStatus, reviews: second.reviews });
} catch (e) {
  fail(String(e && e.stack || e));
} finally {
  await browser.close();
}
