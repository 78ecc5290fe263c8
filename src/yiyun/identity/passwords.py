"""Password hashing (argon2id, RFC 9106) and the strength rules staff passwords must meet.

Rules follow NIST SP 800-63B §5.1.1.2: at least 10 characters, no upper limit below 128,
no composition theatre beyond rejecting what is known to be guessed first — common and
breached passwords, the account's own name, and runs of one character.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from yiyun.core.errors import BadRequest

MIN_LENGTH = 10
MAX_LENGTH = 128
_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    text = resources.files("yiyun.identity").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def password_problems(password: str, *, username: str | None = None) -> list[str]:
    """Why a password is refused, in Chinese for the person choosing it (empty: acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"密码至少需要 {MIN_LENGTH} 个字符")
    if len(password) > MAX_LENGTH:
        problems.append(f"密码不能超过 {MAX_LENGTH} 个字符")
    lowered = password.lower()
    if lowered in _common_passwords() or lowered.rstrip("0123456789!@#.") in _common_passwords():
        problems.append("这个密码太常见，已出现在泄露密码库中，请换一个")
    if username and len(username) >= 3 and username.lower() in lowered:
        problems.append("密码不能包含用户名")
    if len(set(password)) <= 2:
        problems.append("密码不能由同一个字符重复组成")
    return problems


def check_password_strength(password: str, *, username: str | None = None) -> None:
    problems = password_problems(password, username=username)
    if problems:
        raise BadRequest("；".join(problems))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        # spend the same time as a real check so a missing account is not revealed by timing
        _safe_dummy()
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


_DUMMY = _hasher.hash("yiyun-dummy-password")


def _safe_dummy() -> None:
    try:
        _hasher.verify(_DUMMY, "not-the-password")
    except VerifyMismatchError:
        pass
