// A person signs in through Tessera at an upstream OpenID Connect provider, in a real
// browser (headless Chromium driven by playwright-core), for an openid-client relying party
// doing the authorization code flow with PKCE S256, state and nonce.
//
// Environment:
//   ISSUER            Tessera's issuer URL
//   CLIENT_ID         the relying party's client id at Tessera
//   CLIENT_SECRET     its secret (client_secret_basic); unset: a public client
//   REDIRECT_URI      http://127.0.0.1:<port>/<path>, registered on the client; we listen there
//   SCOPE             default "openid profile email offline_access"
//   UPSTREAM          the upstream's name on Tessera's login page (its link is clicked)
//   UPSTREAM_LOGIN, UPSTREAM_PASSWORD   typed into the upstream's sign-in form
//   CHROMIUM          the browser binary (default /usr/bin/chromium)
//
// Prints one line `RESULT <json>` (claims, pages seen, checks; never a token) and exits 0,
// or prints the error and exits 1.

import http from 'node:http';
import * as client from 'openid-client';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`signin.mjs: ${name} is required`);
  return value;
};

const ISSUER = env('ISSUER');
const CLIENT_ID = env('CLIENT_ID');
const CLIENT_SECRET = process.env.CLIENT_SECRET;
const REDIRECT_URI = env('REDIRECT_URI');
const SCOPE = env('SCOPE', 'openid profile email offline_access');
const UPSTREAM = env('UPSTREAM');
const LOGIN = env('UPSTREAM_LOGIN');
const PASSWORD = env('UPSTREAM_PASSWORD', 'any-password');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');

const STEP_TIMEOUT = 15_000;

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** The relying party's redirect_uri: answers every request, hands over the first. */
function callbackServer(redirectUri) {
  const target = new URL(redirectUri);
  const waiting = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, target.origin);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Relying party</title><p>signed in</p>');
    if (url.pathname === target.pathname) waiting.shift()?.(url);
  });
  return {
    listen: () => new Promise((resolve) => server.listen(Number(target.port), target.hostname, resolve)),
    next: () => new Promise((resolve) => waiting.push(resolve)),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

const T0 = Date.now();
const marks = [];
const mark = (what) => marks.push(`${what}@${Date.now() - T0}ms`);

async function main() {
  const issuer = new URL(ISSUER);
  const insecure = issuer.protocol === 'http:' ? { execute: [client.allowInsecureRequests] } : undefined;
  const auth = CLIENT_SECRET ? client.ClientSecretBasic(CLIENT_SECRET) : client.None();
  const config = await client.discovery(issuer, CLIENT_ID, undefined, auth, insecure);
  const meta = config.serverMetadata();
  check(meta.issuer === ISSUER, `discovery issuer ${meta.issuer}`);
  check(meta.authorization_endpoint, 'discovery has authorization_endpoint');
  check(meta.userinfo_endpoint, 'discovery has userinfo_endpoint');

  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });

  const rp = callbackServer(REDIRECT_URI);
  await rp.listen();
  mark('discovered');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  mark('browser');
  const pages = [];
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);

    // 1. The authorization request, in the browser, lands on Tessera's login page.
    let callback = rp.next();
    await page.goto(authorizationUrl.href);
    let landed = await drive(page, callback, pages);
    const firstUrl = landed;

    // 2. The relying party: code → tokens (openid-client checks iss, state, PKCE, nonce,
    //    the ID token's signature, iss, aud, exp, at_hash).
    mark('signed-in');
    const tokens = await client.authorizationCodeGrant(config, firstUrl, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    check(claims, 'an ID token');
    check(typeof tokens.access_token === 'string', 'an access token');
    check(typeof tokens.refresh_token === 'string', 'a refresh token (offline_access)');
    const idHeader = JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url').toString());

    // 3. userinfo with the access token (openid-client checks its sub against the ID token's).
    const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);

    // 4. Refresh: a new refresh token each time (rotation); the rotated one is refused,
    //    and presenting it revokes the whole family, so the newest is refused too.
    mark('tokens');
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    check(typeof refreshed.access_token === 'string', 'refresh gives an access token');
    check(typeof refreshed.refresh_token === 'string', 'refresh gives a refresh token');
    check(refreshed.refresh_token !== tokens.refresh_token, 'the refresh token is rotated');
    const refreshedClaims = refreshed.id_token ? refreshed.claims() : undefined;
    if (refreshedClaims) check(refreshedClaims.sub === claims.sub, 'refreshed ID token has the same sub');
    const refusedError = async (token) => {
      try {
        await client.refreshTokenGrant(config, token);
        return null;
      } catch (e) {
        return e.error ?? e.code ?? e.message;
      }
    };
    const reuse = await refusedError(tokens.refresh_token);
    const familyRevoked = await refusedError(refreshed.refresh_token);

    // 5. A second authorization in the same browser with prompt=none: Tessera's session
    //    cookie signs the user in without any page.
    const verifier2 = client.randomPKCECodeVerifier();
    const state2 = client.randomState();
    const nonce2 = client.randomNonce();
    const silentUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid',
      code_challenge: await client.calculatePKCECodeChallenge(verifier2),
      code_challenge_method: 'S256',
      state: state2,
      nonce: nonce2,
      prompt: 'none',
    });
    mark('refreshed');
    callback = rp.next();
    await page.goto(silentUrl.href);
    const silentPages = [];
    landed = await drive(page, callback, silentPages);
    const silent = await client.authorizationCodeGrant(config, landed, {
      pkceCodeVerifier: verifier2,
      expectedState: state2,
      expectedNonce: nonce2,
      idTokenExpected: true,
    });
    const silentClaims = silent.claims();

    mark('silent');
    // 6. RP-initiated logout back to the relying party, after which prompt=none is
    //    answered login_required: the session at Tessera is gone.
    callback = rp.next();
    await page.goto(
      client.buildEndSessionUrl(config, {
        id_token_hint: silent.id_token,
        post_logout_redirect_uri: REDIRECT_URI,
        state: 'signed-out',
      }).href,
    );
    const loggedOut = await within(callback, 'the post-logout redirect');
    check(loggedOut.searchParams.get('state') === 'signed-out', 'logout returns the state');
    callback = rp.next();
    await page.goto(
      client.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT_URI,
        scope: 'openid',
        code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
        state: 'after-logout',
        prompt: 'none',
      }).href,
    );
    const afterLogout = await within(callback, 'the prompt=none answer after logout');

    mark('logged-out');
    const result = {
      timings: marks,
      pages,
      silent_pages: silentPages,
      id_token_alg: idHeader.alg,
      id_token_typ: idHeader.typ,
      id_token: pick(claims, ['iss', 'sub', 'aud', 'azp', 'email', 'name', 'preferred_username', 'groups', 'amr', 'idp']),
      has: {
        auth_time: typeof claims.auth_time === 'number',
        at_hash: typeof claims.at_hash === 'string',
        nonce: claims.nonce === nonce,
      },
      userinfo: pick(userinfo, ['sub', 'email', 'name', 'preferred_username', 'groups']),
      scope: tokens.scope,
      refreshed_id_token_sub: refreshedClaims?.sub ?? null,
      rotated_refresh_reuse_error: reuse,
      family_revoked_error: familyRevoked,
      silent_sub: silentClaims.sub,
      silent_auth_time_same: silentClaims.auth_time === claims.auth_time,
      after_logout: {
        error: afterLogout.searchParams.get('error'),
        state: afterLogout.searchParams.get('state'),
        iss: afterLogout.searchParams.get('iss'),
      },
    };
    console.log(`RESULT ${JSON.stringify(result)}`);
  } finally {
    await browser.close();
    await rp.close();
  }
}

function pick(object, keys) {
  return Object.fromEntries(keys.filter((k) => object[k] !== undefined).map((k) => [k, object[k]]));
}

/**
 * Clicks through whatever page the browser is on (Tessera's login page → the upstream's
 * link; the upstream's sign-in and consent forms; Tessera's consent page → allow) until
 * the relying party's callback is reached. Returns the callback URL.
 */
async function drive(page, callback, seen) {
  let done = null;
  callback.then((url) => {
    done = url;
  });
  for (let step = 0; step < 12; step++) {
    await page.waitForLoadState('load');
    if (done) break;
    const url = new URL(page.url());
    const here = `${url.origin}${url.pathname}`;
    if (here === REDIRECT_URI) break;
    // Tessera's consent page may be served at /v1/consent or straight after a sign-in
    // (e.g. at /v1/login/callback): tell the pages apart by their content.
    const allow = page.locator('[name=decision][value=allow]');
    if (here.startsWith(ISSUER) && (await allow.count()) === 1) {
      seen.push('tessera-consent');
      await navigating(page, () => allow.click());
    } else if (here.startsWith(`${ISSUER}/v1/login`)) {
      seen.push('tessera-login');
      const link = page.locator(`a.upstream[href*="upstream=${UPSTREAM}"]`);
      if ((await link.count()) !== 1) {
        const text = (await page.textContent('main').catch(() => ''))?.trim().slice(0, 300);
        throw new Error(`Tessera's page ${here} has no link for upstream ${UPSTREAM}: ${text}`);
      }
      const href = new URL(await link.getAttribute('href'), page.url());
      check(href.pathname.endsWith('/v1/login/upstream'), `upstream link goes to /v1/login/upstream: ${href.pathname}`);
      await navigating(page, () => link.click());
    } else if (here.startsWith(ISSUER)) {
      const text = (await page.textContent('main').catch(() => ''))?.trim().slice(0, 300);
      throw new Error(`stuck on Tessera page ${here}: ${text}`);
    } else if (await page.locator('input[name=login]').count()) {
      seen.push('upstream-login');
      await page.fill('input[name=login]', LOGIN);
      await page.fill('input[name=password]', PASSWORD);
      await navigating(page, () => page.locator('button[type=submit]').click());
    } else if (await page.locator('input[name=prompt][value=consent]').count()) {
      seen.push('upstream-consent');
      await navigating(page, () => page.locator('button[type=submit]').click());
    } else {
      const text = (await page.textContent('body').catch(() => ''))?.trim().slice(0, 300);
      throw new Error(`unexpected page ${here}: ${text}`);
    }
  }
  const url = await within(callback, `the callback; last page ${page.url()}`);
  const error = url.searchParams.get('error');
  if (error) throw new Error(`authorization error at the callback: ${error}: ${url.searchParams.get('error_description')}`);
  seen.push('callback');
  return url;
}

/** The callback URL, or an error after STEP_TIMEOUT. */
function within(callback, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`never reached ${what}`)), STEP_TIMEOUT);
  });
  return Promise.race([callback, timeout]).finally(() => clearTimeout(timer));
}

/** Runs `action` and waits for the navigation it starts. */
async function navigating(page, action) {
  const before = page.url();
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }).catch(() => {}), action()]);
  if (page.url() === before) await page.waitForLoadState('load');
}

main().catch((e) => {
  console.error(`signin.mjs: ${e.stack ?? e}`);
  if (e.error) console.error(`error=${e.error} description=${e.error_description ?? ''}`);
  process.exit(1);
});
