// A resource server that knows nothing of Tessera: it fetches tokens and verifies each one with
// jose's createRemoteJWKSet, default caching (10 min max age, 30 s cooldown on unknown kids).
//
//   node rotation-verifier.mjs loop <token_url> <jwks_url> <issuer> <client_id> <client_secret> <seconds>
//       prints one JSON line per second ({ok, failed, kids}) and a final {"summary": ...} line
//   node rotation-verifier.mjs once <jwks_url> <issuer> <token>
//       exit 0 when the token verifies with a freshly fetched JWKS, 3 when it does not
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from "jose";

const [mode, ...args] = process.argv.slice(2);

async function token(tokenUrl, clientId, clientSecret) {
  const res = await fetch(tokenUrl, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: "Basic " + Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString("base64"),
    },
    body: "grant_type=client_credentials",
  });
  if (!res.ok) throw new Error(`token endpoint answered ${res.status}: ${await res.text()}`);
  return (await res.json()).access_token;
}

if (mode === "loop") {
  const [tokenUrl, jwksUrl, issuer, clientId, clientSecret, seconds] = args;
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const end = Date.now() + Number(seconds) * 1000;
  let ok = 0, failed = 0, tokenErrors = 0;
  const kids = new Set();
  const failures = [];
  let lastReport = Date.now();
  while (Date.now() < end) {
    let t;
    try {
      t = await token(tokenUrl, clientId, clientSecret);
    } catch (e) {
      tokenErrors++;
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    const kid = decodeProtectedHeader(t).kid;
    try {
      await jwtVerify(t, jwks, { issuer });
      ok++;
      kids.add(kid);
    } catch (e) {
      failed++;
      if (failures.length < 20) failures.push({ at: new Date().toISOString(), kid, error: `${e.code ?? ""} ${e.message}` });
    }
    if (Date.now() - lastReport >= 1000) {
      lastReport = Date.now();
      console.log(JSON.stringify({ ok, failed, tokenErrors, kids: kids.size }));
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log(JSON.stringify({ summary: { ok, failed, tokenErrors, kids: [...kids], failures } }));
} else if (mode === "once") {
  const [jwksUrl, issuer, t] = args;
  try {
    await jwtVerify(t, createRemoteJWKSet(new URL(jwksUrl)), { issuer });
    console.log("verified");
  } catch (e) {
    console.log(`refused: ${e.code ?? ""} ${e.message}`);
    process.exit(3);
  }
} else {
  console.error("usage: rotation-verifier.mjs loop|once ...");
  process.exit(2);
}
