"""Data protection: identifiers encrypted at rest, masked display, de-identified exports.

    from yiyun.identity.protection import encrypt, decrypt, blind_index, mask_phone, deidentify
    token = encrypt("11010519491231002X", RESIDENT_ID)       # "v1.<key id>.<…>"
    decrypt(token, RESIDENT_ID)                              # raises DecryptionError on any doubt
    blind_index("11010519491231002x", RESIDENT_ID)           # equal for equal normalised values
"""

from yiyun.identity.protection.deid import date_offset_days, deidentify, deidentify_bundle
from yiyun.identity.protection.fields import (
    EMAIL,
    PHONE,
    RESIDENT_ID,
    DecryptionError,
    EncryptedColumn,
    FieldProtector,
    blind_index,
    blind_indexes,
    decrypt,
    encrypt,
    normalize,
    protector,
    register_encrypted_column,
    rotate,
    rotate_column,
)
from yiyun.identity.protection.keyring import (
    KeyConfigurationError,
    KeyRing,
    audit_keyring,
    field_keyring,
    new_key_line,
    parse_keyring,
    reset_keyrings,
)
from yiyun.identity.protection.masking import mask_email, mask_name, mask_phone, mask_resident_id

__all__ = [
    "EMAIL", "PHONE", "RESIDENT_ID", "DecryptionError", "EncryptedColumn", "FieldProtector", "KeyConfigurationError",
    "KeyRing", "audit_keyring", "blind_index", "blind_indexes", "date_offset_days", "decrypt", "deidentify",
    "deidentify_bundle", "encrypt", "field_keyring", "mask_email", "mask_name", "mask_phone", "mask_resident_id",
    "new_key_line", "normalize", "parse_keyring", "protector", "register_encrypted_column", "reset_keyrings",
    "rotate", "rotate_column",
]
