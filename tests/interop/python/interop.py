"""Interop: authlib (discovery, client_credentials, introspection, revocation) and PyJWT
(PyJWKClient) verifying the access token, against a running `tessera serve`."""

import os
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session


def main() -> int:
    env = {k: os.environ[k] for k in ("ISSUER", "CLIENT_ID", "CLIENT_SECRET", "AUDIENCE", "SCOPE")}
    issuer = env["ISSUER"]
    meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    assert meta["issuer"] == issuer, meta

    session = OAuth2Session(
        env["CLIENT_ID"],
        env["CLIENT_SECRET"],
        scope=env["SCOPE"],
        token_endpoint_auth_method="client_secret_basic",
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    access_token = token["access_token"]
    assert token["token_type"].lower() == "bearer", token

    jwks = jwt.PyJWKClient(meta["jwks_uri"])
    signing_key = jwks.get_signing_key_from_jwt(access_token)
    header = jwt.get_unverified_header(access_token)
    assert header["typ"] == "at+jwt", header
    claims = jwt.decode(
        access_token,
        signing_key.key,
        algorithms=[header["alg"]],
        audience=env["AUDIENCE"],
        issuer=issuer,
    )
    assert claims["client_id"] == env["CLIENT_ID"], claims
    assert claims["scp"] == env["SCOPE"].split(" "), claims

    resp = session.introspect_token(meta["introspection_endpoint"], token=access_token)
    assert resp.status_code == 200 and resp.json()["active"] is True, resp.text

    resp = session.revoke_token(meta["revocation_endpoint"], token=access_token)
    assert resp.status_code == 200, resp.text
    resp = session.introspect_token(meta["introspection_endpoint"], token=access_token)
    assert resp.json()["active"] is False, resp.text

    print(f"python interop ok: kid {header['kid']}, alg {header['alg']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
