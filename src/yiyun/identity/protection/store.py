"""Resident IDs and phone numbers in the FHIR store: the key-ring protector and who sees what.

`yiyun.fhir.protection` seals, indexes and reveals the values; this module gives it the keys
(the field-encryption ring, `YIYUN_ENCRYPTION_KEYS` / `_KEY_FILE`) and decides, per caller,
who sees them in full. The rule is deliberately conservative (GB/T 35273-2020 个人信息安全规范
§6.2: show personal information only as far as the purpose needs; §7.3 display restrictions):

- in-process services (a plain `RequestContext`: loaders, jobs, domain workflows) and backend
  systems holding a `system/` scope (the regional data platform, bulk export) see full values;
- staff with the role `admin` or `registration` (patient registration desk) see full values,
  as does a request whose purpose of use is patient administration (`PATADMIN`) or payment
  (`HPAYMT`, insurance settlement needs the ID; HL7 v3 PurposeOfUse);
- a patient sees their own Patient resource in full, a practitioner their own Practitioner;
- everyone else (doctors, nurses, pharmacists, auditors, patients looking at anything else)
  sees the mask: ``110105********1234``, ``138****5678``.

Installed when this module is imported (`install`), which the identity module's installers
and commands do; `install` also switches the free-text guard (`yiyun.fhir.free_text`) as
`YIYUN_MASK_FREE_TEXT` says.
"""

from __future__ import annotations

from yiyun.fhir import free_text
from yiyun.fhir import protection as fhir_protection
from yiyun.fhir.protection import FULL, Disclosure
from yiyun.identity.protection.fields import (
    FieldProtector,
    normalize_phone,
    normalize_resident_id,
    register_normalizer,
)
from yiyun.identity.protection.keyring import field_keyring
from yiyun.identity.protection.masking import mask_phone, mask_resident_id
from yiyun.identity.protection.settings import get_protection_settings

FULL_ROLES = frozenset({"admin", "registration"})
FULL_PURPOSES = frozenset({"PATADMIN", "HPAYMT"})
# The store's blind indexes are of the normalised value, so a search matches however the
# number was typed: resident ID numbers with the check character X in either case (GB
# 11643-1999 §5 defines it as the Roman numeral X; 'x' is a typing variant), blanks and
# dashes dropped; phone numbers as digits only, without China's +86 / 0086 before a mobile
# number. (FHIR token search is exact only "unless the underlying semantics of the context
# indicate that the token should be interpreted case-insensitively",
# https://hl7.org/fhir/R4/search.html#token.) The stored ciphertext keeps the value as written.
_INDEX_PURPOSE = {fhir_protection.RESIDENT_ID: "fhir-resident-id", fhir_protection.PHONE: "fhir-phone"}
register_normalizer(_INDEX_PURPOSE[fhir_protection.RESIDENT_ID], normalize_resident_id)
register_normalizer(_INDEX_PURPOSE[fhir_protection.PHONE], normalize_phone)


def _own_reference(fhir_user: str | None) -> str | None:
    """`Practitioner/123` from `Practitioner/123` or an absolute `…/fhir/R4/Practitioner/123`."""
    if not fhir_user:
        return None
    parts = fhir_user.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


class KeyRingValueProtector:
    """`yiyun.fhir.protection.ValueProtector` over the field-encryption key ring."""

    @staticmethod
    def _fp() -> FieldProtector:
        return FieldProtector(field_keyring())

    def seal(self, kind: str, value: str) -> str:
        return self._fp().encrypt(value, kind)

    def open(self, kind: str, sealed: str) -> str:
        return self._fp().decrypt(sealed, kind)

    def is_current(self, sealed: str) -> bool:
        try:
            return not self._fp().needs_rotation(sealed)
        except Exception:
            return False

    def index_value(self, kind: str, value: str) -> str:
        return self._fp().blind_index(value, _INDEX_PURPOSE.get(kind, kind))

    def index_values(self, kind: str, value: str) -> list[str]:
        """The normalised value's indexes under every key, then those of the value exactly as
        typed: rows indexed before normalisation (as written) match until `yiyun fhir reindex`
        has rewritten them."""
        fp, purpose = self._fp(), _INDEX_PURPOSE.get(kind, kind)
        out = fp.blind_indexes(value, purpose)
        out.extend(i for i in fp.blind_indexes(value, purpose, as_written=True) if i not in out)
        return out

    def mask(self, kind: str, value: str) -> str:
        return mask_phone(value) if kind == fhir_protection.PHONE else mask_resident_id(value)

    def disclosure(self, ctx) -> Disclosure:
        from yiyun.identity.auth import AuthContext

        if not isinstance(ctx, AuthContext):
            return FULL  # in-process services act as the system of their tenant
        if any(s.startswith("system/") for s in ctx.scopes):
            return FULL
        if FULL_ROLES.intersection(ctx.roles) or ctx.purpose in FULL_PURPOSES:
            return FULL
        own = set()
        if ctx.patient:
            own.add(f"Patient/{ctx.patient}")
        ref = _own_reference(ctx.fhir_user)
        if ref:
            own.add(ref)
        return Disclosure(False, frozenset(own))


def install() -> None:
    fhir_protection.install_protector(KeyRingValueProtector())
    free_text.enable_guard(get_protection_settings().mask_free_text)


install()
