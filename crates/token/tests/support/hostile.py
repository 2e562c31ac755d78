"""Hostile tokens minted by an outside JWT library (PyJWT), for tests/hostile_tokens.rs.

Usage: python hostile.py SETTINGS_JSON OUT_DIR

SETTINGS_JSON holds now, iss, tid, other_tid, aud. Writes OUT_DIR/jwks.json (a 2048-bit
RSA key "k1" and a 1024-bit one "weak", both as Entra publishes them, with a v2 key
issuer) and OUT_DIR/tokens.json, {name: token}. Each payload is written as raw JSON
bytes and signed by PyJWT's JWS layer, so that a token can carry what a JSON object
library would never produce: duplicate keys, lone surrogates, invalid UTF-8, numbers
past 2^63, a payload that is an array.
"""

import json
import sys
import warnings

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.api_jws import PyJWS

# The 1024-bit key is the point of one case.
warnings.simplefilter("ignore")

settings = json.loads(sys.argv[1])
out = sys.argv[2]
now = settings["now"]
iss, tid, other_tid, aud = settings["iss"], settings["tid"], settings["other_tid"], settings["aud"]


def key(bits):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem(k):
    return k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def jwk(k, kid):
    j = json.loads(RSAAlgorithm.to_jwk(k.public_key()))
    j.update({"kid": kid, "x5t": kid, "use": "sig", "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"})
    return j


k1, weak = key(2048), key(1024)
with open(f"{out}/jwks.json", "w") as f:
    json.dump({"keys": [jwk(k1, "k1"), jwk(weak, "weak")]}, f)

jws = PyJWS()


def sign(payload: bytes, kid="k1", signer=None):
    headers = {"kid": kid} if kid is not None else {}
    return jws.encode(payload, pem(signer or k1), algorithm="RS256", headers=headers)


def body(**changes):
    """A v2 app-only token's claims as JSON text, with changes (None removes)."""
    c = {
        "aud": aud, "iss": iss, "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
        "azp": "f2d5b1c0-1c3a-4b5e-9a51-0a3c2d1e4f60", "azpacr": "1", "idtyp": "app",
        "oid": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31", "sub": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31",
        "roles": ["Reader"], "tid": tid, "ver": "2.0",
    }
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return json.dumps(c)


def raw(text: str) -> bytes:
    return text.encode()


def with_extra(extra: str, **changes) -> bytes:
    """The claims with raw JSON text put before the closing brace."""
    return raw(body(**changes)[:-1] + ", " + extra + "}")


tokens = {
    "valid": sign(raw(body())),
    # NumericDates as Microsoft.IdentityModel reads them: accepted.
    "exp_float": sign(raw(body(exp=now + 3600.5))),
    "exp_numeric_string": sign(raw(body(exp=str(now + 3600)))),
    "exp_float_string": sign(raw(body(exp=f"{now + 3600}.25"))),
    "exp_spaced_string": sign(raw(body(exp=f" {now + 3600}\t"))),
    "exp_exponent_string": sign(raw(body(exp=f"{(now + 3600) / 1e9}e9"))),
    "nbf_string_future": sign(raw(body(nbf=str(now + 4000), exp=now + 7200))),
    # ... and refused.
    "exp_2_63": sign(raw(body(exp=2**63))),
    "exp_2_64": sign(raw(body(exp=2**64))),
    "exp_1e300": sign(raw(body(exp=1e300))),
    "exp_year_10000": sign(raw(body(exp=253402300800))),
    "exp_negative": sign(raw(body(exp=-1))),
    "exp_word": sign(raw(body(exp="tomorrow"))),
    "exp_infinity": sign(raw(body(exp="Infinity"))),
    "exp_nan": sign(raw(body(exp="NaN"))),
    "exp_null": sign(raw(body(exp=None)[:-1] + ', "exp": null}')),
    "exp_thousands": sign(raw(body(exp=f"{now + 3600:,}"))),
    "exp_bool": sign(raw(body(exp=True))),
    "nbf_bool": sign(raw(body(nbf=True))),
    "nbf_array": sign(raw(body(nbf=[now - 60]))),
    "nbf_word": sign(raw(body(nbf="yesterday"))),
    "nbf_after_exp": sign(raw(body(nbf=now + 200, exp=now + 100))),
    "iat_word": sign(raw(body(iat="yesterday"))),
    "iat_object": sign(raw(body(iat={"s": now}))),
    "tid_twice": sign(with_extra(f'"tid": "{other_tid}"')),
    "tid_and_TID": sign(with_extra(f'"TID": "{other_tid}"')),
    "nested_duplicate": sign(with_extra('"_claim_names": {"groups": "src1", "groups": "src2"}')),
    "lone_surrogate": sign(with_extra('"name": "\\ud800"')),
    "lone_trailing_surrogate": sign(with_extra('"name": "x\\udc00y"')),
    "invalid_utf8": sign(raw(body())[:-1] + b', "name": "\xff\xfe"}'),
    "payload_array": sign(raw(json.dumps([body()]))),
    "payload_string": sign(raw(json.dumps(body()))),
    "aud_number": sign(raw(body(aud=5))),
    "roles_number": sign(raw(body(roles=[1]))),
    # Keys.
    "no_kid": sign(raw(body()), kid=None),
    "rotated_kid": sign(raw(body()), kid="not-published"),
    "stranger_no_kid": sign(raw(body()), kid=None, signer=key(2048)),
    "weak_key": sign(raw(body()), kid="weak", signer=weak),
    "huge_kid": sign(raw(body()), kid="k" * 10_000, signer=key(2048)),
    "no_scope_or_role": sign(raw(body(roles=None))),
}
with open(f"{out}/tokens.json", "w") as f:
    json.dump(tokens, f)
