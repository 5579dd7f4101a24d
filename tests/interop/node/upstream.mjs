// An upstream OpenID Connect provider for the sign-in tests: Node's `oidc-provider`, which
// nobody here wrote, on a loopback port, with one confidential client (Tessera) and one user.
//
//   node upstream.mjs --port 43123 --client-id tessera --client-secret ... \
//        --redirect-uri http://127.0.0.1:8080/oauth2/people/v1/login/callback
//
// (each flag may also come from the environment: PORT, CLIENT_ID, CLIENT_SECRET,
// REDIRECT_URI). The sign-in pages are oidc-provider's own development interactions: a
// form with `login` and `password` (any password), then a consent form ("Continue").
// The user whose login is `ada` has the claims below; any other login is unknown (the
// provider then fails the sign-in).
//
// Prints `UPSTREAM <issuer>` on stdout once listening; stops on SIGTERM or when stdin closes.

import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT },
    'client-id': { type: 'string', default: process.env.CLIENT_ID },
    'client-secret': { type: 'string', default: process.env.CLIENT_SECRET },
    'redirect-uri': { type: 'string', default: process.env.REDIRECT_URI },
  },
});
for (const name of ['port', 'client-id', 'client-secret', 'redirect-uri']) {
  if (!args[name]) {
    console.error(`upstream.mjs: --${name} is required`);
    process.exit(2);
  }
}

export const USERS = {
  ada: {
    sub: 'ada',
    email: 'ada@example.org',
    email_verified: true,
    name: 'Ada Lovelace',
    groups: ['engines', 'analysts'],
  },
};

const issuer = `http://127.0.0.1:${args.port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      redirect_uris: [args['redirect-uri']],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  async findAccount(_ctx, id) {
    const user = Object.hasOwn(USERS, id) ? USERS[id] : undefined;
    if (!user) return undefined;
    return { accountId: id, claims: async () => ({ ...user }) };
  },
  // The account id (the login) is the subject.
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Scope claims also in the ID token (not only at userinfo), as most providers do.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
  cookies: { keys: ['upstream-test-cookie-key-0123456789'] },
});
provider.proxy = false;

const server = provider.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`UPSTREAM ${issuer}`);
});
provider.on('server_error', (_ctx, err) => console.error('upstream server_error:', err.message));

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
