"""Access tokens, SMART scopes and password rules."""

from __future__ import annotations

import pytest

from yiyun.core.errors import BadRequest, Unauthorized
from yiyun.identity.passwords import hash_password, password_problems, verify_password
from yiyun.identity.scopes import ResourceScope, normalise, parse_scope
from yiyun.identity.tokens import issue_access_token, verify_access_token


@pytest.fixture(autouse=True)
def _isolated_key(monkeypatch, tmp_path):
    from yiyun.core.settings import get_settings

    monkeypatch.setenv("YIYUN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("YIYUN_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_smart_v2_and_v1_scopes():
    s = parse_scope("patient/Observation.rs?category=vital-signs")
    assert isinstance(s, ResourceScope) and s.context == "patient" and s.permissions == frozenset("rs")
    assert s.query == "category=vital-signs" and s.allows("Observation", "r") and not s.allows("Observation", "u")
    assert not s.allows("Condition", "r")
    assert normalise("user/Patient.read system/*.write") == "user/Patient.rs system/*.cud"
    assert parse_scope("launch/patient") == "launch/patient"
    for bad in ("patient/Observation.sr", "patient/observation.rs", "admin/*.rs", "user/Patient.x", "root"):
        with pytest.raises(BadRequest):
            parse_scope(bad)


def test_tokens_round_trip_and_refuse_forgery_and_expiry(monkeypatch):
    token, claims = issue_access_token(subject="service:lab", tenant="h1", scope="system/*.cruds", roles=("admin",))
    back = verify_access_token(token)
    assert back.tenant == "h1" and back.scope == "system/*.cruds" and back.roles == ("admin",)
    header, payload, sig = token.split(".")
    for forged in (f"{header}.{payload}.{sig[::-1]}", f"{header}.{payload[:-2]}AA.{sig}", "not.a.token", ""):
        with pytest.raises(Unauthorized):
            verify_access_token(forged)
    expired, _ = issue_access_token(subject="s", tenant="h1", scope="system/*.rs", minutes=-1)
    with pytest.raises(Unauthorized):
        verify_access_token(expired)
    # a token signed with another key (another deployment) is refused
    monkeypatch.setenv("YIYUN_SECRET_KEY", "another-deployment-secret-key-0123456789")
    from yiyun.core.settings import get_settings

    get_settings.cache_clear()
    with pytest.raises(Unauthorized):
        verify_access_token(token)


def test_unsigned_alg_none_token_is_refused():
    import base64
    import json

    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'iss': 'yiyun', 'sub': 'x', 'tenant': 'h1', 'exp': 9999999999, 'scope': 'system/*.cruds'})}."
    with pytest.raises(Unauthorized):
        verify_access_token(forged)


def test_password_rules_and_hashing():
    assert password_problems("123456")
    assert password_problems("woaini1314")  # a favourite of Chinese breach lists
    assert password_problems("Password123!")
    assert password_problems("liyisheng-2024", username="liyisheng")
    assert password_problems("aaaaaaaaaaaa")
    assert password_problems("心内科李医生的长密码二〇二四") == []
    h = hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse battery staple")
    assert not verify_password(h, "Correct horse battery staple")
    assert not verify_password(None, "anything")
