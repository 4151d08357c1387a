// The peer of the side-by-side benchmark: npm `oidc-provider` (OpenID-certified), configured as
// closely to ours as it allows, with everything in memory (no durability at all).
//
//   node benchmarks/peer.mjs --port 3100 --refresh-tokens 200000 --out benchmarks/out
//
// It mints, through the provider's own models, one-use refresh tokens (rotation on, as ours) and
// 2,000 distinct access tokens for introspection, writes them and wrk scripts to --out, prints
// "peer <url> ready", and serves until SIGTERM.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Provider from 'oidc-provider';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, v, i, all) => (i % 2 ? pairs : [...pairs, [v.replace(/^--/, ''), all[i + 1]]]), []),
);
const port = Number(args.port ?? 3100);
const refreshCount = Number(args['refresh-tokens'] ?? 200000);
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
    devInteractions: { enabled: false },
  },
  scopes: ['openid', 'offline_access'],
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  // As ours: every refresh rotates the refresh token.
  rotateRefreshToken: true,
  ttl: { AccessToken: 600, RefreshToken: 86400, ClientCredentials: 600, Grant: 86400 },
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
const basic = Buffer.from(`${CLIENT}:${SECRET}`).toString('base64');
const headers = `{["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = "Basic ${basic}"}`;
const done = 'done = function(summary, latency, requests)\n  io.write(string.format("non2xx=%d errors=%d\\n", summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n';
const threads = 'local counter = 0\nsetup = function(thread) counter = counter + 1; thread:set("tid", counter) end\n';
writeFileSync(join(out, 'peer_refresh.lua'), `local tokens = {}\nfor line in io.lines("${out}/peer_refresh_tokens.txt") do tokens[#tokens + 1] = line end\n${threads}`
  + `init = function(args) i = tid end\nrequest = function()\n  local t = tokens[i] or "exhausted"\n  i = i + NTHREADS\n`
  + `  return wrk.format("POST", "/token", ${headers}, "grant_type=refresh_token&refresh_token=" .. t)\nend\n${done}`);
writeFileSync(join(out, 'peer_client_credentials.lua'), `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n`
  + `wrk.headers["Authorization"] = "Basic ${basic}"\nwrk.body = "grant_type=client_credentials"\n${done}`);
writeFileSync(join(out, 'peer_introspect_many.lua'), `local tokens = {}\nfor line in io.lines("${out}/peer_access_tokens.txt") do tokens[#tokens + 1] = line end\n${threads}`
  + `init = function(args) i = tid * 997 end\nrequest = function()\n  i = i + 1\n  local t = tokens[(i % #tokens) + 1]\n`
  + `  return wrk.format("POST", "/token/introspection", ${headers}, "token=" .. t)\nend\n${done}`);

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`peer ${issuer} ready: ${refresh.length} one-use refresh tokens, ${access.length} access tokens`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
