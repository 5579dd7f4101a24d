// Interop: openid-client (discovery, client_credentials, introspection, revocation) and
// jose createRemoteJWKSet verifying the access token, against a running `tessera serve`.
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import * as jose from 'jose';

const { ISSUER, CLIENT_ID, CLIENT_SECRET, AUDIENCE, SCOPE } = process.env;
for (const [k, v] of Object.entries({ ISSUER, CLIENT_ID, CLIENT_SECRET, AUDIENCE, SCOPE })) {
  if (!v) throw new Error(`environment variable ${k} is required`);
}

const config = await client.discovery(
  new URL(ISSUER),
  CLIENT_ID,
  undefined,
  client.ClientSecretBasic(CLIENT_SECRET),
  { execute: [client.allowInsecureRequests] },
);
const meta = config.serverMetadata();
assert.equal(meta.issuer, ISSUER);

const tokens = await client.clientCredentialsGrant(config, { scope: SCOPE });
assert.equal(tokens.token_type.toLowerCase(), 'bearer');
assert.ok(tokens.expires_in > 0);

const JWKS = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
const { payload, protectedHeader } = await jose.jwtVerify(tokens.access_token, JWKS, {
  issuer: ISSUER,
  audience: AUDIENCE,
  typ: 'at+jwt',
});
assert.equal(payload.client_id, CLIENT_ID);
assert.equal(payload.cid, CLIENT_ID);
assert.deepEqual(payload.scp, SCOPE.split(' '));
assert.ok(protectedHeader.kid);

const active = await client.tokenIntrospection(config, tokens.access_token);
assert.equal(active.active, true);
assert.equal(active.client_id, CLIENT_ID);

await client.tokenRevocation(config, tokens.access_token);
const after = await client.tokenIntrospection(config, tokens.access_token);
assert.equal(after.active, false);

console.log(`node interop ok: kid ${protectedHeader.kid}, alg ${protectedHeader.alg}`);
