// A fintech's integration through the generated TypeScript SDK only (no hand-written HTTP).
// Driven by tests/integration/sdks.rs, in two phases (see sdks/python/scenario.py, the same
// scenario in Python):
//   node dist/scenario.js portal BASE STAFF1 STAFF2 PASSWORD WEBHOOK_URL
//   node dist/scenario.js grants BASE DEVELOPER_TOKEN CLIENT_ID CLIENT_SECRET GRANT_ID
// Each prints one JSON object; any unexpected answer throws (non-zero exit).

import {
  clientGrant,
  clientRevokeGrant,
  createClient as createApiClient,
  developerLogin,
  developerMe,
  getClient,
  kycQueue,
  kycReview,
  putKyc,
  revocationFeed,
  rotateSecret,
  signUp,
  staffConfirm,
  staffEnrol,
  staffLogin,
  submitKyc,
  webhookDeliveries,
} from './client/index.js';
import { createClient, createConfig } from './client/client/index.js';
import { createHmac } from 'node:crypto';

const EMAIL = 'sdk-typescript@fintech.example';
const DEV_PASSWORD = 'a long developer password';
const REDIRECT = 'https://app.fintech.example/callback';

/** RFC 6238 as an authenticator app computes it from a base32 secret (HMAC-SHA-1, 6 digits, 30 s). */
function totp(secret: string, at = Date.now()): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from((bits.match(/.{8}/g) ?? []).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30000)));
  const digest = createHmac('sha1', key).update(counter).digest();
  const offset = digest[19]! & 0x0f;
  const value = digest.readUInt32BE(offset) & 0x7fffffff;
  return String(value % 1_000_000).padStart(6, '0');
}

/** A client for `base` that answers every security scheme with `token`. */
function api(base: string, token?: string) {
  return createClient(createConfig({ baseUrl: base, auth: () => token }));
}

/** The parsed body of a successful answer; anything else throws with what the server said. */
async function must<T>(
  what: string,
  call: Promise<{ data?: T; error?: unknown; response?: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (data === undefined || error !== undefined) {
    throw new Error(`${what}: HTTP ${response?.status}: ${JSON.stringify(error)}`);
  }
  return data;
}

function check(what: string, condition: boolean, detail?: unknown): void {
  if (!condition) {
    throw new Error(`${what}: ${JSON.stringify(detail)}`);
  }
}

async function portal(
  base: string,
  staff1: string,
  staff2: string,
  staffPassword: string,
  webhookUrl: string,
  code1: string,
  code2: string,
) {
  const client = api(base);
  await must('sign up', signUp({ client, body: { email: EMAIL, password: DEV_PASSWORD, display_name: 'SDK Fintech TS' } }));
  const session = await must('session', developerLogin({ client, body: { email: EMAIL, password: DEV_PASSWORD } }));
  const dev = api(base, session.access_token);

  const draft = await must('draft', putKyc({
    client: dev,
    body: {
      legal_name: 'SDK Fintech TS Ltd',
      registration_number: 'HRB-112233',
      country: 'DE',
      address: '3 Example Street, 10115 Berlin',
      contact_person: 'Toni Compliance',
      documents: [{ kind: 'certificate_of_incorporation', filename: 'incorporation.pdf', sha256: 'c'.repeat(64) }],
    },
  }));
  check('KYC draft', draft.status === 'draft', draft);
  const submitted = await must('submitted', submitKyc({ client: dev }));
  check('KYC submitted', submitted.status === 'submitted', submitted);

  // Four eyes: two different staff members approve. Their first login owes enrolment of an
  // authenticator: the password's token and the operator's enrolment code set one up, and the
  // first code opens the session.
  const staffMembers: [string, string][] = [
    [staff1, code1],
    [staff2, code2],
  ];
  for (const [username, enrolmentCode] of staffMembers) {
    const login = await must('login', staffLogin({ client, body: { username, password: staffPassword } }));
    check('enrolment due', login.second_factor_due === 'enrol', login);
    const owing = api(base, login.access_token);
    const enrolment = await must('enrol', staffEnrol({ client: owing, body: { enrolment_code: enrolmentCode } }));
    check('otpauth URI', enrolment.otpauth_uri.startsWith('otpauth://totp/'), enrolment);
    const enrolled = await must('confirm', staffConfirm({ client: owing, body: { code: totp(enrolment.secret) } }));
    check('recovery codes', enrolled.recovery_codes.length === 10, enrolled);
    const staff = api(base, enrolled.session!.access_token);
    const queue = await must('queue', kycQueue({ client: staff }));
    const item = queue.submissions.find((s) => s.developer_email === EMAIL);
    check('in the queue', item !== undefined, queue);
    await must(
      'review',
      kycReview({
        client: staff,
        path: { submission_id: item!.id },
        body: { decision: 'approve', justification: 'Documents checked against the register.' },
      }),
    );
  }
  const me = await must('me', developerMe({ client: dev }));
  check('KYC approved', me.kyc_status === 'approved', me);

  // Production (approved KYC): FAPI 2.0, so certificate-bound (RFC 8705) rather than a secret.
  const production = await must(
    'production client',
    createApiClient({
      client: dev,
      body: {
        name: 'SDK Budget TS',
        environment: 'production',
        redirect_uris: [REDIRECT],
        auth_method: 'tls_client_auth',
        tls_client_auth_subject_dn: 'CN=budget,O=SDK Fintech TS Ltd,C=DE',
        tls_client_certificate_bound_access_tokens: true,
      },
    }),
  );
  check('production', production.environment === 'production' && production.client_secret == null, production);
  // The sandbox client the rest of the scenario uses: a secret (rotated), and a webhook.
  const created = await must(
    'sandbox client',
    createApiClient({
      client: dev,
      body: { name: 'SDK Budget TS (sandbox)', environment: 'sandbox', redirect_uris: [REDIRECT], webhook_url: webhookUrl },
    }),
  );
  const rotated = await must('rotated', rotateSecret({ client: dev, path: { client_id: created.client_id } }));
  check('rotated', typeof rotated.client_secret === 'string' && rotated.client_secret !== created.client_secret);
  return {
    developer_token: session.access_token,
    client_id: created.client_id,
    client_secret: rotated.client_secret,
    redirect_uri: REDIRECT,
  };
}

async function grants(base: string, developerToken: string, clientId: string, clientSecret: string, grantId: string) {
  const fintech = api(base, `${clientId}:${clientSecret}`);
  const grant = await must('grant', clientGrant({ client: fintech, path: { id: grantId } }));
  check('authorized', grant.status === 'authorized', grant);

  const before = await must('before', revocationFeed({ client: fintech }));
  const revoked = await clientRevokeGrant({ client: fintech, path: { id: grantId } });
  check('revoked', revoked.response?.status === 204, revoked.error);
  const after = await must('after', revocationFeed({ client: fintech, query: { since: before.next_cursor } }));
  check('in the feed', after.revocations.some((e) => e.grant_id === grantId), after);
  const ended = await must('ended', clientGrant({ client: fintech, path: { id: grantId } }));
  check('ended', ended.status === 'revoked', ended);

  const dev = api(base, developerToken);
  const listed = await must('listed', webhookDeliveries({ client: dev, path: { client_id: clientId } }));
  check(
    'webhook event',
    listed.deliveries.some((d) => d.event_type === 'grant.revoked' && d.grant_id === grantId),
    listed,
  );
  const client = await must('client', getClient({ client: dev, path: { client_id: clientId } }));
  return {
    revoked_in_feed: true,
    webhook_events: listed.deliveries.map((d) => d.event_type),
    client_status: client.status,
  };
}

const [phase, ...args] = process.argv.slice(2);
const a = (i: number): string => {
  const v = args[i];
  if (v === undefined) throw new Error(`missing argument ${i}`);
  return v;
};
const out =
  phase === 'portal'
    ? await portal(a(0), a(1), a(2), a(3), a(4), a(5), a(6))
    : phase === 'grants'
      ? await grants(a(0), a(1), a(2), a(3), a(4))
      : (() => {
          throw new Error(`unknown phase ${phase}`);
        })();
console.log(JSON.stringify(out));
