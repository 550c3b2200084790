// A real OpenID provider for Keygate's single sign-on tests: panva's oidc-provider (an
// OpenID-certified implementation) with one confidential client, an optional public client
// and a few fixed accounts. Started by tests/support/oidc_provider.py; configured by env:
//
//   OIDC_PORT             port to listen on (127.0.0.1)                       required
//   OIDC_ISSUER           issuer URL                  default http://127.0.0.1:$OIDC_PORT
//   OIDC_CLIENT_ID        the confidential client (client_secret_basic)        required
//   OIDC_CLIENT_SECRET    its secret                                           required
//   OIDC_REDIRECT_URIS    comma-separated redirect URIs of both clients        required
//   OIDC_PUBLIC_CLIENT_ID a public client (token_endpoint_auth_method none)    optional
//   OIDC_ID_TOKEN_CLAIMS  "1": put email/name in the ID token itself (as Google does);
//                         otherwise they come only from the userinfo endpoint (the default
//                         of the spec's "conform" mode)
//   OIDC_JWKS_FILE        a JSON file {"keys": [private JWKs with kid and alg]} to sign
//                         with (the first key of each alg signs); default: a fresh RS256
//                         and ES256 key. Restarting with another file rotates the keys.
//   OIDC_RESOURCE_AUDIENCE user tokens (Keygate SPEC §11): JWT access tokens with this
//                         aud, for resource indicators https://api.keygate.test/<ALG>/<TTL>
//                         (ALG RS256 or ES256, TTL in seconds), from the client
//                         credentials grant of the OIDC_SERVICE_CLIENTS
//   OIDC_SERVICE_CLIENTS  "id:secret:org,…": clients whose access tokens carry sub = id
//                         and the claim org = org
//
// Sign-in uses the library's development interactions: a login page with any login name
// (one of the accounts below) and any password. Consent is skipped: the clients are
// first-party. Prints "ready <issuer>" on stdout once it listens.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const ACCOUNTS = {
  'ada@example.com': { email: 'ada@example.com', email_verified: true, name: 'Ada Lovelace' },
  'eve@example.com': { email: 'eve@example.com', email_verified: false, name: 'Eve Unverified' },
  'grace@example.com': { email: 'grace@example.com', email_verified: true, name: 'Grace Hopper' },
  nomail: { name: 'No Email' },
};

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} is required`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('OIDC_PORT'));
const issuer = process.env.OIDC_ISSUER || `http://127.0.0.1:${port}`;
const redirectUris = required('OIDC_REDIRECT_URIS').split(',').filter(Boolean);

const clients = [
  {
    client_id: required('OIDC_CLIENT_ID'),
    client_secret: required('OIDC_CLIENT_SECRET'),
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  },
];
if (process.env.OIDC_PUBLIC_CLIENT_ID) {
  clients.push({
    client_id: process.env.OIDC_PUBLIC_CLIENT_ID,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  });
}

// Fresh signing keys for every run unless a file gives them: nothing secret is committed.
function freshKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return [
    { ...rsa.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: `k-${randomBytes(6).toString('hex')}` },
    { ...ec.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: `k-${randomBytes(6).toString('hex')}` },
  ];
}
const signingKeys = process.env.OIDC_JWKS_FILE
  ? JSON.parse(readFileSync(process.env.OIDC_JWKS_FILE, 'utf8')).keys
  : freshKeys();

// User tokens: service clients (client credentials) get JWT access tokens for Keygate.
const audience = process.env.OIDC_RESOURCE_AUDIENCE;
const serviceOrgs = {};
for (const entry of (process.env.OIDC_SERVICE_CLIENTS || '').split(',').filter(Boolean)) {
  const [clientId, clientSecret, org] = entry.split(':');
  serviceOrgs[clientId] = org;
  clients.push({
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [],
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'read manage events',
  });
}
const userTokenFeatures = audience ? {
  clientCredentials: { enabled: true },
  resourceIndicators: {
    enabled: true,
    defaultResource: () => undefined,
    useGrantedResource: () => true,
    getResourceServerInfo(ctx, resource) {
      const match = /^https:\/\/api\.keygate\.test\/(RS256|ES256)\/(\d+)$/.exec(resource);
      if (!match) throw new errors.InvalidTarget();
      return {
        scope: 'read manage events',
        audience,
        accessTokenFormat: 'jwt',
        accessTokenTTL: Number(match[2]),
        jwt: { sign: { alg: match[1] } },
      };
    },
  },
} : {};

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: signingKeys },
  features: userTokenFeatures,
  ...(audience ? { scopes: ['openid', 'offline_access', 'read', 'manage', 'events'] } : {}),
  async extraTokenClaims(ctx, token) {
    const org = serviceOrgs[token.clientId];
    return org ? { org } : undefined;
  },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  conformIdTokenClaims: process.env.OIDC_ID_TOKEN_CLAIMS !== '1',
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
  // First-party clients: grant the requested OpenID scopes without a consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    grant.addOIDCClaims(['email', 'email_verified', 'name']);
    await grant.save();
    return grant;
  },
});

const server = createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections(); // a browser's keep-alive connections must not hold us up
});
