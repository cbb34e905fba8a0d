#!/usr/bin/env python3
"""Makes the JWT test cases with PyJWT and cryptography: an independent implementation, so that
zerogate's verifier is tested against tokens it did not make.

Usage: make_tokens.py NOW ISSUER SECOND_ISSUER OUT_DIR

Writes into OUT_DIR:
  jwks.json          the provider's published keys (plus keys that must be skipped)
  jwks-rotated.json  the same provider after a key rotation (only `rsa-2`)
  jwks-second.json   a second provider's keys (its own `rsa-1`)
  cases.json         [{"name", "kind": "access"|"id", "issuers": 1|2, "expect": "ok"|<refusal kind>,
                       "token"}]; cases with "issuers": 2 need both providers configured
Keys are generated fresh on every run; nothing secret is stored in the repository.
"""

import base64
import hashlib
import hmac
import json
import sys
import warnings

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

AUDIENCE = "zerogate-gateway"

warnings.simplefilter("ignore")  # PyJWT warns about the deliberately weak key
now = int(sys.argv[1])
ISSUER = sys.argv[2]
SECOND_ISSUER = sys.argv[3]
out = sys.argv[4]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pss_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
noalg_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
rotated_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
second_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
ec384_key = ec.generate_private_key(ec.SECP384R1())
ed_key = ed25519.Ed25519PrivateKey.generate()


def jwk(algorithm_class, key, kid, alg=None, **extra):
    entry = algorithm_class.to_jwk(key.public_key(), as_dict=True)
    entry["kid"] = kid
    entry["use"] = "sig"
    if alg:
        entry["alg"] = alg
    entry.update(extra)
    return entry


published = [
    jwk(RSAAlgorithm, rsa_key, "rsa-1", "RS256"),
    jwk(RSAAlgorithm, pss_key, "pss-1", "PS256"),
    jwk(RSAAlgorithm, noalg_key, "rsa-noalg"),
    jwk(ECAlgorithm, ec_key, "ec-1", "ES256"),
    jwk(ECAlgorithm, ec384_key, "ec384-1", "ES384"),
    jwk(OKPAlgorithm, ed_key, "ed-1", "EdDSA"),
    # Must be skipped: too short, symmetric, for encryption.
    jwk(RSAAlgorithm, weak_key, "rsa-weak", "RS256"),
    {"kty": "oct", "kid": "hmac-1", "k": b64(b"0" * 32), "alg": "HS256"},
    dict(jwk(RSAAlgorithm, attacker_key, "enc-1", "RSA-OAEP"), use="enc"),
]
with open(f"{out}/jwks.json", "w") as f:
    json.dump({"keys": published}, f)
with open(f"{out}/jwks-rotated.json", "w") as f:
    json.dump({"keys": [jwk(RSAAlgorithm, rotated_key, "rsa-2", "RS256")]}, f)

with open(f"{out}/jwks-second.json", "w") as f:
    json.dump({"keys": [jwk(RSAAlgorithm, second_key, "rsa-1", "RS256")]}, f)

rsa_public_pem = rsa_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)

counter = [0]


def claims(**changes):
    counter[0] += 1
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now + 300,
        "iat": now - 10,
        "nbf": now - 10,
        "jti": f"token-{counter[0]}",
        "groups": ["engineering"],
        "client_id": "cli",
    }
    for name, value in changes.items():
        name = name.rstrip("_")
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


DROP = object()
cases = []


def case(name, expect, token, kind="access", issuers=1):
    cases.append({"name": name, "kind": kind, "issuers": issuers, "expect": expect, "token": token})


def signed(key=rsa_key, alg="RS256", kid="rsa-1", typ="at+jwt", payload=None, **headers):
    header = {"kid": kid, "typ": typ} if kid is not None else {"typ": typ}
    if typ is None:
        header.pop("typ")
    header.update(headers)
    return jwt.encode(payload if payload is not None else claims(), key, algorithm=alg, headers=header)


def raw(header: dict | bytes, payload: dict | bytes, key=rsa_key, alg="RS256") -> str:
    """Signs exact bytes (duplicate members, invalid UTF-8) that PyJWT would not produce."""
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    payload_bytes = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(header_bytes)}.{b64(payload_bytes)}".encode()
    signature = jwt.get_algorithm_by_name(alg).sign(signing_input, key)
    return f"{signing_input.decode()}.{b64(signature)}"


# Accepted, with every algorithm and the typing and timing edges.
case("rs256", "ok", signed())
case("ps256", "ok", signed(pss_key, "PS256", "pss-1"))
case("rsa-key-without-alg-binds-rs256", "ok", signed(noalg_key, "RS256", "rsa-noalg"))
case("es256", "ok", signed(ec_key, "ES256", "ec-1"))
case("es384", "ok", signed(ec384_key, "ES384", "ec384-1"))
case("eddsa", "ok", signed(ed_key, "EdDSA", "ed-1"))
case("typ-application-at+jwt", "ok", signed(typ="application/at+jwt"))
case("typ-case-insensitive", "ok", signed(typ="AT+JWT"))
case("aud-array-with-ours", "ok", signed(payload=claims(aud=["other-api", AUDIENCE])))
case("exp-29s-ago-within-leeway", "ok", signed(payload=claims(exp=now - 29)))
case("nbf-29s-ahead-within-leeway", "ok", signed(payload=claims(nbf=now + 29)))
case("iat-fractional", "ok", signed(payload=claims(iat=now - 10.5)))
case("no-nbf-no-iat", "ok", signed(payload=claims(nbf=DROP, iat=DROP)))
case("unknown-header-parameter-ignored", "ok", signed(custom="x"))

# RFC 8725 3.1 and 3.2: algorithm verification, `none` in every spelling.
for spelling in ["none", "None", "NONE", "nOnE"]:
    header = b64(json.dumps({"alg": spelling, "typ": "at+jwt", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    case(f"alg-{spelling}-empty-signature", "alg_not_allowed", f"{header}.{body}.")
    case(f"alg-{spelling}-with-signature", "alg_not_allowed", f"{header}.{body}.{b64(b'sig')}")
# Key confusion: HMAC with the RSA public key as the secret.
header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}).encode())
body = b64(json.dumps(claims()).encode())
mac = hmac.new(rsa_public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
case("hs256-with-rsa-public-key-as-secret", "alg_not_allowed", f"{header}.{body}.{b64(mac)}")
case("hs256-published-oct-key", "alg_not_allowed", signed(b"0" * 32, "HS256", "hmac-1"))
# A key used with another algorithm than its own.
case("rs256-header-on-ec-key-id", "unknown_key", signed(rsa_key, "RS256", "ec-1"))
case("ps256-with-rs256-key", "unknown_key", signed(rsa_key, "PS256", "rsa-1"))
case("es384-header-on-es256-key", "unknown_key", signed(ec384_key, "ES384", "ec-1"))
case("weak-rsa-key-not-published", "unknown_key", signed(weak_key, "RS256", "rsa-weak"))
case("attacker-key-with-our-kid", "bad_signature", signed(attacker_key, "RS256", "rsa-1"))
# 3.3 nested tokens, 3.4/3.6 JWE and compression, 3.8 keys from the token.
case("nested-cty-jwt", "forbidden_header", signed(cty="JWT"))
case("zip", "forbidden_header", signed(zip="DEF"))
case("crit-unknown-extension", "forbidden_header", signed(crit=["exp"], exp=now + 300))
# PyJWT detaches the unencoded payload, so the token has an empty claims part.
case("b64-false-detached-payload", "bad_json", signed(b64=False))
attacker_jwk = RSAAlgorithm.to_jwk(attacker_key.public_key(), as_dict=True)
case("embedded-jwk", "forbidden_header", signed(attacker_key, jwk=attacker_jwk))
case("jku", "forbidden_header", signed(attacker_key, jku="https://attacker.example/jwks.json"))
case("x5u", "forbidden_header", signed(attacker_key, x5u="https://attacker.example/cert.pem"))
case("x5c", "forbidden_header", signed(attacker_key, x5c=["MIIB"]))
case("jwe-five-parts", "malformed", "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d")
case("two-parts", "malformed", ".".join(signed().split(".")[:2]))
case("padded-signature", "malformed", signed() + "=")
case("standard-base64-alphabet", "malformed", signed().replace("-", "+").replace("_", "/") + "+/")
# 3.7 UTF-8 and duplicate members.
case("claims-invalid-utf8", "bad_json",
     raw({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"},
         json.dumps(claims()).encode().replace(b'"alice"', b'"al\xffice"')))
case("claims-lone-surrogate", "bad_json",
     raw({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"},
         json.dumps(claims()).encode().replace(b'"alice"', b'"\\ud800"')))
case("duplicate-sub", "bad_json",
     raw({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"},
         json.dumps(claims()).encode()[:-1] + b', "sub": "admin"}'))
case("duplicate-alg-in-header", "bad_json",
     raw(b'{"alg":"none","typ":"at+jwt","kid":"rsa-1","alg":"RS256"}', claims()))
case("header-not-object", "bad_json", raw(b'["RS256"]', claims()))
# 3.10 kid is not a path or a query.
case("kid-path-traversal", "unknown_key", signed(kid="../../../../dev/null"))
case("kid-sql", "unknown_key", signed(kid="' OR 1=1--"))
case("kid-number", "unknown_key", raw({"alg": "RS256", "typ": "at+jwt", "kid": 7}, claims()))
case("kid-unknown", "unknown_key", signed(kid="rsa-404"))
case("kid-one-megabyte", "malformed", signed(kid="k" * (1 << 20)))
case("no-kid-and-several-keys", "unknown_key", signed(kid=None))
# 3.11 and 3.12 explicit typing and exclusive kinds.
case("access-without-typ", "wrong_type", signed(typ=None))
case("access-typ-jwt", "wrong_type", signed(typ="JWT"))
case("access-with-nonce", "wrong_type", signed(payload=claims(nonce="n-0S6_WzA2Mj")))
case("logout-token", "wrong_type",
     signed(payload=claims(events={"http://schemas.openid.net/event/backchannel-logout": {}})))
case("id-token", "ok", signed(typ="JWT", payload=claims(nonce="abc", azp=AUDIENCE)), kind="id")
case("id-token-without-typ", "ok", signed(typ=None), kind="id")
case("id-validator-refuses-access-token", "wrong_type", signed(), kind="id")
case("id-token-untrusted-extra-audience", "wrong_audience",
     signed(typ="JWT", payload=claims(aud=[AUDIENCE, "someone-else"], azp=AUDIENCE)), kind="id")
case("id-logout-token", "wrong_type",
     signed(typ="JWT", payload=claims(events={"http://schemas.openid.net/event/backchannel-logout": {}})),
     kind="id")
# 3.8 issuer, 3.9 audience.
case("iss-trailing-slash", "wrong_issuer", signed(payload=claims(iss=ISSUER + "/")))
case("iss-other-case", "wrong_issuer", signed(payload=claims(iss=ISSUER.upper())))
case("iss-missing", "wrong_issuer", signed(payload=claims(iss=DROP)))
case("iss-not-string", "wrong_issuer", raw({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"}, claims(iss=["x"])))
case("aud-other", "wrong_audience", signed(payload=claims(aud="other-api")))
case("aud-empty-array", "wrong_audience", signed(payload=claims(aud=[])))
case("aud-empty-string", "wrong_audience", signed(payload=claims(aud="")))
case("aud-missing", "wrong_audience", signed(payload=claims(aud=DROP)))
case("aud-not-strings", "wrong_audience", signed(payload=claims(aud=[7])))
case("aud-prefix-of-ours", "wrong_audience", signed(payload=claims(aud=AUDIENCE[:-1])))
# Time, at the leeway's edge (30 s) from both sides.
case("exp-31s-ago", "expired", signed(payload=claims(exp=now - 31)))
case("exp-missing", "bad_claim", signed(payload=claims(exp=DROP)))
case("exp-string", "bad_claim", signed(payload=claims(exp=str(now + 300))))
case("nbf-31s-ahead", "not_yet_valid", signed(payload=claims(nbf=now + 31)))
case("iat-31s-ahead", "not_yet_valid", signed(payload=claims(iat=now + 31)))
case("sub-missing", "bad_claim", signed(payload=claims(sub=DROP)))
case("sub-empty", "bad_claim", signed(payload=claims(sub="")))
# Signature integrity.
good = signed()
head, body, sig = good.split(".")
forged_body = b64(json.dumps(claims(sub="admin")).encode())
case("claims-swapped-under-old-signature", "bad_signature", f"{head}.{forged_body}.{sig}")
# 2048-bit RSA: 342 characters; 336 is a canonical length (252 bytes).
case("signature-truncated", "bad_signature", f"{head}.{body}.{sig[:336]}")
case("signature-non-canonical-base64", "malformed", f"{head}.{body}.{sig[:336]}AB")
der = ec_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
ec_head = b64(json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}).encode())
der = ec_key.sign(f"{ec_head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
case("es256-der-signature", "bad_signature", f"{ec_head}.{body}.{b64(der)}")
# Rotation: a token of the rotated key is unknown until the provider publishes it.
case("rotated-key", "unknown_key", signed(rotated_key, "RS256", "rsa-2"))

# Several issuers: each token is checked with its own issuer's keys only.
case("second-issuer", "ok", signed(second_key, payload=claims(iss=SECOND_ISSUER)), issuers=2)
case("first-issuer-claimed-with-second-issuers-key", "bad_signature", signed(second_key), issuers=2)
case("unconfigured-issuer", "unknown_issuer",
     signed(payload=claims(iss="https://idp.example.test/other")), issuers=2)

with open(f"{out}/cases.json", "w") as f:
    json.dump(cases, f, indent=1)
print(len(cases))
