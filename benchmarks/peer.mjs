// The peer of the side-by-side benchmark: npm `oidc-provider` (OpenID-certified), configured as
// closely to ours as it allows, with everything in memory (no durability at all).
//
//   node benchmarks/peer.mjs --port 3100 --refresh-tokens 200000 --codes 100000 --out benchmarks/out
//
// It mints, through the provider's own models, one-use refresh tokens (rotation on, as ours),
// one-use authorization codes (PKCE S256) and 2,000 distinct access tokens for introspection,
// writes them and wrk scripts to --out, prints "peer <url> ready", and serves until SIGTERM.
// For whole flows (benchmarks/flows.mjs) it runs its own login and consent pages (the bundled
// `devInteractions`), and checks the customer's password against an Argon2id hash with our
// parameters (19 MiB, t=2, p=1) through @node-rs/argon2 (native Rust, the `argon2-rust` crate;
// about 11 ms a verification here against 18 ms for RustCrypto's `argon2`, ours), as our login
// does: the bundled pages accept any password.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as argon2 from '@node-rs/argon2';
import Provider from 'oidc-provider';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, v, i, all) => (i % 2 ? pairs : [...pairs, [v.replace(/^--/, ''), all[i + 1]]]), []),
);
const port = Number(args.port ?? 3100);
const refreshCount = Number(args['refresh-tokens'] ?? 200000);
const codeCount = Number(args.codes ?? 0);
const out = args.out ?? 'benchmarks/out';
const issuer = `http://127.0.0.1:${port}`;
const CLIENT = 'bench-client';
const SECRET = 'bench-client-secret-0123456789abcdef';

// The bundled memory adapter keeps at most 1,000 entries (an LRU): too few for a load test.
// This one is a plain Map, still in memory only.
const stores = new Map();
const grants = new Map();
class MapAdapter {
  constructor(model) {
    this.model = model;
    if (!stores.has(model)) stores.set(model, new Map());
    this.store = stores.get(model);
  }
  async upsert(id, payload, expiresIn) {
    this.store.set(id, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    if (payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, []);
      grants.get(payload.grantId).push([this.model, id]);
    }
  }
  async find(id) {
    const found = this.store.get(id);
    if (!found || found.expiresAt <= Date.now()) return undefined;
    return found.payload;
  }
  async findByUid(uid) {
    for (const [, v] of this.store) if (v.payload.uid === uid) return v.payload;
    return undefined;
  }
  async findByUserCode() {
    return undefined;
  }
  async consume(id) {
    const found = this.store.get(id);
    if (found) found.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    this.store.delete(id);
  }
  async revokeByGrantId(grantId) {
    for (const [model, id] of grants.get(grantId) ?? []) stores.get(model)?.delete(id);
    grants.delete(grantId);
  }
}

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: [
    {
      client_id: CLIENT,
      client_secret: SECRET,
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:8081/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    devInteractions: { enabled: true },
  },
  scopes: ['openid', 'offline_access'],
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  // As ours: every refresh rotates the refresh token.
  rotateRefreshToken: true,
  // Codes live an hour, as the ones seeded on our side for the code-exchange runs.
  ttl: {
    AccessToken: 600, AuthorizationCode: 3600, RefreshToken: 86400, ClientCredentials: 600, Grant: 86400,
    Interaction: 3600, Session: 86400,
  },
});

// The customer's password, checked before the bundled login page takes the login.
const USERNAME = 'alice';
const PASSWORD = 'demo-password-123';
const passwordHash = await argon2.hash(PASSWORD, {
  algorithm: argon2.Algorithm.Argon2id, memoryCost: 19 * 1024, timeCost: 2, parallelism: 1,
});
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path.startsWith('/interaction/')) {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString();
    const form = new URLSearchParams(body);
    if (form.get('prompt') === 'login'
      && !(form.get('login') === USERNAME && await argon2.verify(passwordHash, form.get('password') ?? ''))) {
      ctx.status = 401;
      ctx.body = 'wrong login or password';
      return;
    }
    ctx.request.body = body;
  }
  await next();
});

const client = await provider.Client.find(CLIENT);
const grantIds = [];
for (let g = 0; g < 64; g += 1) {
  const grant = new provider.Grant({ accountId: `customer-${g}`, clientId: CLIENT });
  grant.addOIDCScope('offline_access');
  grantIds.push(await grant.save());
}
const mintRefresh = (i) => new provider.RefreshToken({
  client, accountId: `customer-${i % 64}`, grantId: grantIds[i % 64],
  scope: 'offline_access', gty: 'authorization_code', authTime: Math.floor(Date.now() / 1000),
}).save();
const refresh = [];
for (let i = 0; i < refreshCount; i += 1) refresh.push(await mintRefresh(i));
const { createHash } = await import('node:crypto');
const VERIFIER = 'bench-code-verifier-0123456789abcdefghijklmnopqrstuvwxyz';
const CHALLENGE = createHash('sha256').update(VERIFIER).digest('base64url');
const REDIRECT = 'http://127.0.0.1:8081/callback';
const codes = [];
for (let i = 0; i < codeCount; i += 1) {
  codes.push(await new provider.AuthorizationCode({
    client, accountId: `customer-${i % 64}`, grantId: grantIds[i % 64], scope: 'offline_access',
    redirectUri: REDIRECT, codeChallenge: CHALLENGE, codeChallengeMethod: 'S256',
    authTime: Math.floor(Date.now() / 1000),
  }).save());
}
const access = [];
for (let i = 0; i < 2000; i += 1) {
  access.push(await new provider.AccessToken({
    client, accountId: `customer-${i % 64}`, grantId: grantIds[i % 64],
    scope: 'offline_access', gty: 'authorization_code',
  }).save());
}

mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'peer_refresh_tokens.txt'), refresh.join('\n'));
writeFileSync(join(out, 'peer_access_tokens.txt'), access.join('\n'));
writeFileSync(join(out, 'peer_codes.txt'), codes.join('\n'));
writeFileSync(join(out, 'peer_flow.json'), JSON.stringify({
  kind: 'peer', client_id: CLIENT, client_secret: SECRET, redirect_uri: REDIRECT, username: USERNAME,
  password: PASSWORD, scope: 'openid offline_access', token_path: '/token',
}));
const basic = Buffer.from(`${CLIENT}:${SECRET}`).toString('base64');
const headers = `{["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = "Basic ${basic}"}`;
const done = 'done = function(summary, latency, requests)\n  io.write(string.format("non2xx=%d errors=%d\\n", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n';
const threads = 'local counter = 0\nsetup = function(thread) counter = counter + 1; thread:set("tid", counter) end\n';
writeFileSync(join(out, 'peer_refresh.lua'), `local tokens = {}\nfor line in io.lines("${out}/peer_refresh_tokens.txt") do tokens[#tokens + 1] = line end\n${threads}`
  + `init = function(args) i = tid end\nrequest = function()\n  local t = tokens[i] or "exhausted"\n  i = i + NTHREADS\n`
  + `  return wrk.format("POST", "/token", ${headers}, "grant_type=refresh_token&refresh_token=" .. t)\nend\n${done}`);
writeFileSync(join(out, 'peer_code.lua'), `local tokens = {}\nfor line in io.lines("${out}/peer_codes.txt") do tokens[#tokens + 1] = line end\n${threads}`
  + `init = function(args) i = tid end\nrequest = function()\n  local t = tokens[i] or "exhausted"\n  i = i + NTHREADS\n`
  + `  return wrk.format("POST", "/token", ${headers}, "grant_type=authorization_code&redirect_uri=${encodeURIComponent(REDIRECT)}&code_verifier=${VERIFIER}&code=" .. t)\nend\n${done}`);
writeFileSync(join(out, 'peer_client_credentials.lua'), `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n`
  + `wrk.headers["Authorization"] = "Basic ${basic}"\nwrk.body = "grant_type=client_credentials"\n${done}`);
writeFileSync(join(out, 'peer_introspect_many.lua'), `local tokens = {}\nfor line in io.lines("${out}/peer_access_tokens.txt") do tokens[#tokens + 1] = line end\n${threads}`
  + `init = function(args) i = tid * 997 end\nrequest = function()\n  i = i + 1\n  local t = tokens[(i % #tokens) + 1]\n`
  + `  return wrk.format("POST", "/token/introspection", ${headers}, "token=" .. t)\nend\n${done}`);

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`peer ${issuer} ready: ${refresh.length} one-use refresh tokens, ${codes.length} codes, ${access.length} access tokens`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
