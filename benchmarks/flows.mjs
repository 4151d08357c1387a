// Whole consent flows per second, driven the same way against ours and the peer: each flow is a
// new browser (its own cookies) that pushes the authorization request, opens the authorization
// URL, logs the customer in with a password, consents, follows the redirect to the code and
// exchanges it (PKCE S256). A flow counts only if the token response has an access token and a
// refresh token.
//
//   node benchmarks/flows.mjs --config target/wrk/flow.json --url http://127.0.0.1:PORT \
//     --seconds 10 --concurrency 16
//
// --config is the JSON the server side wrote (`consent-load --scenario hold`: target/wrk/flow.json;
// benchmarks/peer.mjs: <out>/peer_flow.json): {kind: "ours"|"peer", client_id, client_secret,
// redirect_uri, username, password, account?, scope?, token_path}. Prints
// `flows=N failed=F seconds=S rate=R/s`, the first failure if any, and with `--steps 1` the mean
// latency of each step.

import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, v, i, all) => (i % 2 ? pairs : [...pairs, [v.replace(/^--/, ''), all[i + 1]]]), []),
);
const config = JSON.parse(readFileSync(args.config, 'utf8'));
const base = args.url;
const seconds = Number(args.seconds ?? 10);
const concurrency = Number(args.concurrency ?? 16);
const basic = `Basic ${Buffer.from(`${config.client_id}:${config.client_secret}`).toString('base64')}`;
const FORM = 'application/x-www-form-urlencoded';

let browsers = 0;

/**
 * A new browser: a cookie jar (name -> value; paths and flags are not needed here) and its own
 * address, which it names in X-Forwarded-For as a reverse proxy would (ours trusts it from
 * 127.0.0.1 in the benchmark, so per-address limits apply per customer; the peer ignores it).
 */
class Browser {
  constructor() {
    this.cookies = new Map();
    browsers += 1;
    this.address = `10.${(browsers >> 16) & 255}.${(browsers >> 8) & 255}.${browsers & 255}`;
  }

  async go(method, path, { form, auth } = {}) {
    const headers = { 'x-forwarded-for': this.address };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (auth) headers.authorization = auth;
    let body;
    if (form) {
      headers['content-type'] = FORM;
      body = new URLSearchParams(form).toString();
    }
    const url = path.startsWith('http') ? path : base + path;
    const started = performance.now();
    const r = await fetch(url, { method, headers, body, redirect: 'manual' });
    for (const c of r.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const gone = !value || attrs.some((a) => /^\s*max-age=0\s*$/i.test(a));
      if (gone) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const text = await r.text();
    const ms = performance.now() - started;
    return { status: r.status, location: r.headers.get('location'), text, ms };
  }
}

// Time spent in each step, summed over all flows (printed with --steps).
const stepTimes = new Map();

function expect(step, r, status) {
  stepTimes.set(step, (stepTimes.get(step) ?? 0) + r.ms);
  if (r.status !== status) {
    throw new Error(`${step}: ${r.status} (expected ${status}) ${r.location ?? ''} ${r.text.slice(0, 200)}`);
  }
  return r;
}

const csrf = (html) => /name="csrf_token" value="([^"]+)"/.exec(html)?.[1];
const pathOf = (location) => (location.startsWith('http') ? new URL(location).pathname + new URL(location).search : location);

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return [verifier, createHash('sha256').update(verifier).digest('base64url')];
}

async function exchange(b, code, verifier) {
  const r = expect('code exchange', await b.go('POST', config.token_path, {
    auth: basic,
    form: { grant_type: 'authorization_code', code, redirect_uri: config.redirect_uri, code_verifier: verifier },
  }), 200);
  const t = JSON.parse(r.text);
  if (!t.access_token || !t.refresh_token) throw new Error(`code exchange: no tokens ${r.text.slice(0, 200)}`);
}

const codeOf = (location) => new URL(location).searchParams.get('code');

/** Ours: PAR, authorize, consent page (to login), login page and form, consent page, decision. */
async function oursFlow() {
  const b = new Browser();
  const [verifier, challenge] = pkce();
  const details = JSON.stringify([{ type: 'account_access', actions: ['accounts:read', 'transactions:read'] }]);
  const par = expect('PAR', await b.go('POST', '/oauth2/par', {
    auth: basic,
    form: {
      response_type: 'code', redirect_uri: config.redirect_uri, code_challenge: challenge,
      code_challenge_method: 'S256', state: 'st', authorization_details: details,
    },
  }), 201);
  const requestUri = JSON.parse(par.text).request_uri;
  const q = new URLSearchParams({ client_id: config.client_id, request_uri: requestUri });
  const consent = expect('authorize', await b.go('GET', `/oauth2/authorize?${q}`), 303).location;
  const login = expect('consent page (logged out)', await b.go('GET', consent), 303).location;
  const page = expect('login page', await b.go('GET', login), 200);
  const next = new URL(login, base).searchParams.get('next') ?? consent;
  expect('login', await b.go('POST', '/login', {
    form: { csrf_token: csrf(page.text), username: config.username, password: config.password, next },
  }), 303);
  const html = expect('consent page', await b.go('GET', consent), 200).text;
  const form = new URLSearchParams({ csrf_token: csrf(html), decision: 'approve', account: config.account });
  form.append('action', 'accounts:read');
  form.append('action', 'transactions:read');
  const done = expect('decision', await b.go('POST', consent, { form }), 303);
  await exchange(b, codeOf(done.location), verifier);
}

/** The peer: PAR, authorize, login interaction, resume, consent interaction, resume. */
async function peerFlow() {
  const b = new Browser();
  const [verifier, challenge] = pkce();
  const par = expect('PAR', await b.go('POST', '/request', {
    auth: basic,
    form: {
      response_type: 'code', redirect_uri: config.redirect_uri, code_challenge: challenge,
      client_id: config.client_id, code_challenge_method: 'S256', state: 'st', scope: config.scope,
      prompt: 'consent',
    },
  }), 201);
  const requestUri = JSON.parse(par.text).request_uri;
  const q = new URLSearchParams({ client_id: config.client_id, request_uri: requestUri });
  let at = expect('authorize', await b.go('GET', `/auth?${q}`), 303).location;
  expect('login page', await b.go('GET', pathOf(at)), 200);
  let resume = expect('login', await b.go('POST', pathOf(at), {
    form: { prompt: 'login', login: config.username, password: config.password },
  }), 303).location;
  at = expect('resume after login', await b.go('GET', pathOf(resume)), 303).location;
  expect('consent page', await b.go('GET', pathOf(at)), 200);
  resume = expect('consent', await b.go('POST', pathOf(at), { form: { prompt: 'consent' } }), 303).location;
  const done = expect('resume after consent', await b.go('GET', pathOf(resume)), 303);
  await exchange(b, codeOf(done.location), verifier);
}

const flow = config.kind === 'peer' ? peerFlow : oursFlow;
let ok = 0;
let failed = 0;
let firstFailure;
const started = performance.now();
const deadline = started + seconds * 1000;
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (performance.now() < deadline) {
    try {
      await flow();
      ok += 1;
    } catch (e) {
      failed += 1;
      firstFailure ??= e.message;
    }
  }
}));
const took = (performance.now() - started) / 1000;
console.log(`flows=${ok} failed=${failed} seconds=${took.toFixed(1)} rate=${(ok / took).toFixed(1)}/s`);
if (firstFailure) console.log(`first failure: ${firstFailure}`);
if (args.steps) {
  for (const [step, ms] of stepTimes) console.log(`  ${(ms / Math.max(ok, 1)).toFixed(2).padStart(8)} ms  ${step}`);
}
