// The bank's identity provider for the upstream-login test: npm `oidc-provider` (OpenID-
// certified), in memory, with its development interactions (a login page that accepts any
// username with any password, then a consent page). One confidential client: this service.
// Usage: node idp.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI   (prints "idp <issuer> ready")
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, preferred_username: id, name: id }; } };
  },
});
provider.on('server_error', (ctx, err) => console.error('idp server_error', err));
const server = provider.listen(Number(port), '127.0.0.1', () => console.log(`idp ${issuer} ready`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
