// The whole OAuth flow with a stock client library (oauth4webapi, unmodified) for every protocol
// step, and real headless Chromium for the customer's login and consent (with narrowing).
// MODE `dpop` binds everything to a DPoP key (RFC 9449) the library makes and signs proofs with;
// `bearer` does not; `fapi` is `dpop` with private_key_jwt (RFC 7523): CLIENT_SECRET is then the
// client's private P-256 JWK (kid k1).
// Usage: node oauth-flow.mjs ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD MODE [SCREENSHOT]
import * as oauth from 'oauth4webapi';
import { launch, fail, done, captureCallback } from './lib.mjs';

const [issuerUrl, clientId, clientSecret, redirectUri, username, password, mode, screenshot] = process.argv.slice(2);
if (!['bearer', 'dpop', 'fapi'].includes(mode)) fail(`MODE must be bearer, dpop or fapi, not ${mode}`);
const insecure = { [oauth.allowInsecureRequests]: true }; // the test server speaks plain http on loopback

const issuer = new URL(issuerUrl);
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }));
const client = { client_id: clientId };
async function privateKeyJwt(jwkText) {
  const { kid, ...jwk } = JSON.parse(jwkText);
  const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  return oauth.PrivateKeyJwt({ key, kid });
}
const clientAuth = mode === 'fapi' ? await privateKeyJwt(clientSecret) : oauth.ClientSecretBasic(clientSecret);
const DPoP = mode === 'bearer' ? undefined : oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
const options = { ...insecure, DPoP };

const verifier = oauth.generateRandomCodeVerifier();
const challenge = await oauth.calculatePKCECodeChallenge(verifier);
const state = oauth.generateRandomState();
const params = new URLSearchParams({
  redirect_uri: redirectUri,
  response_type: 'code',
  code_challenge: challenge,
  code_challenge_method: 'S256',
  state,
  authorization_details: JSON.stringify([{
    type: 'account_access',
    actions: ['accounts:read', 'balances:read', 'transactions:read'],
  }]),
});
const parResponse = await oauth.pushedAuthorizationRequest(as, client, clientAuth, params, options);
const par = await oauth.processPushedAuthorizationResponse(as, client, parResponse);

const authUrl = new URL(as.authorization_endpoint);
authUrl.searchParams.set('client_id', clientId);
authUrl.searchParams.set('request_uri', par.request_uri);

const { browser, page } = await launch();
try {
  const callback = await captureCallback(page, redirectUri);
  await page.goto(authUrl.href);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForSelector('form[action^="/oauth2/consent/"]');
  const heading = await page.textContent('h1');
  const accounts = await page.$$eval('input[name=account]', (els) => els.map((e) => e.value));
  if (accounts.length < 2) fail(`expected several accounts on the consent page, got ${accounts}`);
  // Narrow: share only the first account, and not balances.
  for (const value of accounts.slice(1)) await page.uncheck(`input[name=account][value="${value}"]`);
  await page.uncheck('input[name=action][value="balances:read"]');
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  await page.click('button[value=approve]');
  await page.waitForFunction(() => document.body.innerText.includes('callback received'));
  const callbackUrl = callback();
  if (!callbackUrl) fail('no callback');
  if (page.consoleErrors.length) fail(`console errors: ${page.consoleErrors.join('; ')}`);

  // oauth4webapi checks state and the RFC 9207 iss parameter.
  const callbackParams = oauth.validateAuthResponse(as, client, new URL(callbackUrl), state);
  const tokenResponse = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, callbackParams, redirectUri, verifier, options);
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, tokenResponse);

  // The sandbox bank API, called as the library calls any protected resource (with a proof in
  // DPoP mode); then the same token sent as a plain bearer token.
  const accountsUrl = new URL('/sandbox/v1/accounts', issuer);
  const served = await oauth.protectedResourceRequest(tokens.access_token, 'GET', accountsUrl, undefined, undefined, options);
  const asBearer = await fetch(accountsUrl, { headers: { authorization: `Bearer ${tokens.access_token}` } });

  const refreshed = await oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, options));
  // A bound refresh token is not rotated: the response answers the same one back.
  const refreshToken = refreshed.refresh_token;

  const introspection = await oauth.processIntrospectionResponse(as, client,
    await oauth.introspectionRequest(as, client, clientAuth, refreshed.access_token, insecure));

  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, clientAuth, refreshToken, insecure));
  const afterRevocation = await oauth.processIntrospectionResponse(as, client,
    await oauth.introspectionRequest(as, client, clientAuth, refreshed.access_token, insecure));

  done({
    heading,
    offeredAccounts: accounts,
    grantId: tokens.grant_id,
    tokenType: tokens.token_type,
    servedStatus: served.status,
    servedAccounts: served.ok ? (await served.json()).map((a) => a.id) : null,
    bearerStatus: asBearer.status,
    bearerChallenges: asBearer.headers.get('www-authenticate'),
    refreshRotated: refreshed.refresh_token !== tokens.refresh_token,
    introspectionJkt: introspection.cnf?.jkt ?? null,
    scope: tokens.scope,
    authorizationDetails: tokens.authorization_details,
    refreshedScope: refreshed.scope,
    introspectionActive: introspection.active,
    introspectionAccounts: introspection.authorization_details?.[0]?.accounts,
    activeAfterRevocation: afterRevocation.active,
    grantStatusAfterRevocation: afterRevocation.grant_status,
  });
} catch (e) {
  fail(String(e?.stack || e));
} finally {
  await browser.close();
}
