"""OpenID Connect ID tokens and the key set that verifies them.

Access tokens are HS256 JWTs that only this server reads (`yiyun.identity.tokens`), so
their key is never published. ID tokens are read by apps, so they are signed RS256 (the
algorithm every OpenID Connect party must support, OIDC Core §15.1) with a key pair
generated once into the data folder (`oidc-signing.pem`, mode 0600), whose public half is
served at `/oauth2/jwks`. SMART apps learn the signed-in user from the `fhirUser` claim
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-identity-data).
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import RSAKey

from yiyun.core.logging import get_logger
from yiyun.core.settings import get_settings

log = get_logger("yiyun.oauth")
ID_TOKEN_ALG = "RS256"


def issuer() -> str:
    """The OpenID Connect issuer: this server's public base URL."""
    return get_settings().base_url.rstrip("/")


@lru_cache(maxsize=4)
def _key(data_dir: str) -> RSAKey:
    path = Path(data_dir).resolve() / "oidc-signing.pem"
    if not path.exists():
        key = RSAKey.generate_key(2048, private=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole under a temporary name, then linked into place: another process
        # never reads half a key, and when two generate at once the first link wins
        tmp = path.with_name(f".oidc-signing.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.as_pem(private=True))
        try:
            os.link(tmp, path)
            log.warning("oidc_signing_key_generated", path=str(path))
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    key = RSAKey.import_key(path.read_bytes())
    key.ensure_kid()
    return key


def signing_key() -> RSAKey:
    return _key(str(get_settings().data_dir))


def public_jwks() -> dict:
    key = signing_key()
    public = key.as_dict(private=False)
    public.update({"use": "sig", "alg": ID_TOKEN_ALG, "kid": key.kid})
    return {"keys": [public]}


def issue_id_token(grant, client, *, nonce: str | None, access_token: str) -> str:
    """OIDC Core §2 ID token for the user of `grant`, addressed to `client`."""
    now = int(time.time())
    claims = {
        "iss": issuer(), "sub": grant.subject, "aud": client.client_id, "iat": now,
        "exp": now + 60 * get_settings().access_token_minutes,
    }
    if grant.fhir_user:
        claims["fhirUser"] = _fhir_user_url(grant.fhir_user)
    if nonce:
        claims["nonce"] = nonce
    key = signing_key()
    return jwt.encode({"alg": ID_TOKEN_ALG, "typ": "JWT", "kid": key.kid}, claims, key)


def _fhir_user_url(reference: str | None) -> str | None:
    """SMART: `fhirUser` is the absolute URL of the user's FHIR resource."""
    if not reference:
        return None
    if reference.startswith("http"):
        return reference
    return get_settings().base_url.rstrip("/") + "/fhir/R4/" + reference
