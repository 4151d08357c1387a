"""A FAPI 2.0 client written with a third-party JOSE library (joserfc), no Rust involved:
private_key_jwt client assertions and DPoP proofs (ES256) against the running server.

Driven by tests/integration/python_client.rs in three steps that share a state file:
  keys STATE                          -> {"jwks": <public JWK Set>}
  par STATE ISSUER CLIENT REDIRECT    -> {"status": 201, "request_uri": ...}
  finish STATE ISSUER CLIENT CODE REDIRECT
                                      -> statuses of the token exchange, sandbox calls, refresh
"""

import base64
import hashlib
import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from joserfc import jwt
from joserfc.jwk import ECKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load(path):
    with open(path) as f:
        return json.load(f)


def save(path, state):
    with open(path, "w") as f:
        json.dump(state, f)


def keys_of(state):
    return ECKey.import_key(state["client_key"]), ECKey.import_key(state["dpop_key"])


def assertion(key, issuer, client):
    now = int(time.time())
    claims = {"iss": client, "sub": client, "aud": issuer, "iat": now, "exp": now + 30,
              "jti": secrets.token_urlsafe(16)}
    return jwt.encode({"alg": "ES256", "kid": "k1", "typ": "JWT"}, claims, key)


def proof(dpop_key, method, url, token=None):
    claims = {"htm": method, "htu": url, "iat": int(time.time()), "jti": secrets.token_urlsafe(16)}
    if token is not None:
        claims["ath"] = b64(hashlib.sha256(token.encode()).digest())
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": dpop_key.as_dict(private=False)}
    return jwt.encode(header, claims, dpop_key)


def call(method, url, form=None, headers=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def client_auth(state, issuer, client):
    client_key, _ = keys_of(state)
    return {"client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(client_key, issuer, client)}


def main():
    step, state_path = sys.argv[1], sys.argv[2]
    if step == "keys":
        client_key = ECKey.generate_key("P-256", private=True)
        dpop_key = ECKey.generate_key("P-256", private=True)
        save(state_path, {"client_key": client_key.as_dict(private=True),
                          "dpop_key": dpop_key.as_dict(private=True)})
        public = dict(client_key.as_dict(private=False), kid="k1")
        print(json.dumps({"jwks": {"keys": [public]}}))
        return
    state = load(state_path)
    _, dpop_key = keys_of(state)
    issuer, client = sys.argv[3], sys.argv[4]
    if step == "par":
        redirect = sys.argv[5]
        verifier = secrets.token_urlsafe(48)
        state["verifier"] = verifier
        save(state_path, state)
        details = [{"type": "account_access",
                    "actions": ["accounts:read", "balances:read", "transactions:read"]}]
        form = dict(client_auth(state, issuer, client),
                    response_type="code", redirect_uri=redirect,
                    code_challenge=b64(hashlib.sha256(verifier.encode()).digest()),
                    code_challenge_method="S256", state="py-state",
                    authorization_details=json.dumps(details))
        url = issuer + "/oauth2/par"
        status, body = call("POST", url, form, {"DPoP": proof(dpop_key, "POST", url)})
        print(json.dumps({"status": status, "request_uri": (body or {}).get("request_uri")}))
        return
    if step == "finish":
        code, redirect = sys.argv[5], sys.argv[6]
        out = {}
        token_url = issuer + "/oauth2/token"
        form = dict(client_auth(state, issuer, client), grant_type="authorization_code",
                    code=code, redirect_uri=redirect, code_verifier=state["verifier"])
        status, tokens = call("POST", token_url, form,
                              {"DPoP": proof(dpop_key, "POST", token_url)})
        out["token"] = status
        out["token_type"] = tokens.get("token_type")
        access, refresh = tokens["access_token"], tokens["refresh_token"]
        api = issuer + "/sandbox/v1/accounts"
        p = proof(dpop_key, "GET", api, access)
        out["api"] = call("GET", api, headers={"Authorization": "DPoP " + access, "DPoP": p})[0]
        # The same proof again is a replay; the token as a bearer token is refused.
        out["api_replayed"] = call("GET", api,
                                   headers={"Authorization": "DPoP " + access, "DPoP": p})[0]
        out["api_bearer"] = call("GET", api, headers={"Authorization": "Bearer " + access})[0]
        form = dict(client_auth(state, issuer, client), grant_type="refresh_token",
                    refresh_token=refresh)
        status, again = call("POST", token_url, form,
                             {"DPoP": proof(dpop_key, "POST", token_url)})
        out["refresh"] = status
        out["refresh_kept"] = again.get("refresh_token") == refresh
        # An assertion is single use.
        reused = client_auth(state, issuer, client)
        form = dict(reused, grant_type="refresh_token", refresh_token=refresh)
        call("POST", token_url, form, {"DPoP": proof(dpop_key, "POST", token_url)})
        status, body = call("POST", token_url, form, {"DPoP": proof(dpop_key, "POST", token_url)})
        out["assertion_replayed"] = [status, (body or {}).get("error")]
        print(json.dumps(out))
        return
    raise SystemExit("unknown step " + step)


if __name__ == "__main__":
    main()
