// The peer of `benches/run`: Node's oidc-provider issuing JWT access tokens for
// client_credentials (resource indicators, default resource api://payments), signed with
// the algorithm in ALG, the same client id and scopes as Tessera's example server.
// Usage: PORT=... ALG=ES256|RS256|EdDSA CLIENT_SECRET=... node server.mjs
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 3000);
const alg = process.env.ALG || 'ES256';
const clientSecret = process.env.CLIENT_SECRET || 'bench-secret';
const issuer = `http://127.0.0.1:${port}/oauth2/payments`;

const pair = {
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  EdDSA: () => generateKeyPairSync('ed25519'),
}[alg];
if (!pair) throw new Error(`unknown ALG ${alg}`);
const jwk = { ...pair().privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `bench-${alg}` };

const scope = 'payments:read payments:write';
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'team-orders.orders-api',
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope,
  }],
  jwks: { keys: [jwk] },
  scopes: ['payments:read', 'payments:write'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'api://payments',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope,
        audience: 'api://payments',
        accessTokenTTL: 3600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
  enabledJWA: { idTokenSigningAlgValues: [alg] },
  clientDefaults: { id_token_signed_response_alg: alg },
  routes: { token: '/v1/token', jwks: '/v1/keys', introspection: '/v1/introspect' },
});
provider.proxy = false;

// Mounted under the issuer's path, like Tessera's routes.
const mount = '/oauth2/payments';
const callback = provider.callback();
const { createServer } = await import('node:http');
createServer((req, res) => {
  if (req.url.startsWith(mount)) {
    req.url = req.url.slice(mount.length) || '/';
    return callback(req, res);
  }
  res.statusCode = 404;
  res.end();
}).listen(port, '127.0.0.1', () => console.log(`oidc-provider ${alg} listening on ${issuer}`));
