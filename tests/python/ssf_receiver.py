"""A Shared Signals receiver's check of Security Event Tokens, written with a stock JOSE library
(joserfc), nothing of ours: each SET must verify against the transmitter's published JWK Set,
be typed `secevent+jwt`, and name the expected issuer and audience.

stdin: {"jwks": {...}, "sets": ["<compact JWS>", ...], "issuer": "...", "audience": "..."}
stdout: [{"kid": "...", "claims": {...}}, ...] in the order given; exit 1 on the first failure.
"""

import json
import sys

from joserfc import jws
from joserfc.jwk import KeySet


def main() -> None:
    req = json.load(sys.stdin)
    keys = KeySet.import_key_set(req["jwks"])
    out = []
    for token in req["sets"]:
        obj = jws.deserialize_compact(token, keys, algorithms=["EdDSA"])
        header = obj.headers()
        if header.get("typ") != "secevent+jwt":
            raise SystemExit(f"typ is {header.get('typ')!r}")
        claims = json.loads(obj.payload)
        if claims.get("iss") != req["issuer"]:
            raise SystemExit(f"iss is {claims.get('iss')!r}")
        if claims.get("aud") != req["audience"]:
            raise SystemExit(f"aud is {claims.get('aud')!r}")
        if "events" not in claims or "jti" not in claims or "iat" not in claims:
            raise SystemExit("not a SET: events, jti and iat are required")
        out.append({"kid": header.get("kid"), "claims": claims})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
