"""Scanned paper consent forms: checked, stored through `yiyun.core.storage`, described as a
FHIR Attachment (https://hl7.org/fhir/R4/datatypes.html#Attachment) for Consent.sourceAttachment.

A form is a PDF, JPEG or PNG of at most 10 MiB. The declared type must match the file's own
first bytes, so a renamed executable or HTML page is refused (415) rather than stored and
later served to a browser. Forms are kept under `consent-forms/<tenant>/<uuid>.<ext>` and
served only to the desk staff of that tenant and to the patient whose consent names them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from yiyun.core.errors import BadRequest, NotFound, TooLarge, YiyunError
from yiyun.core.storage import get_storage

MAX_BYTES = 10 * 1024 * 1024
# declared type → (first bytes of such a file, file extension)
FORM_TYPES = {
    "application/pdf": (b"%PDF-", "pdf"),
    "image/jpeg": (b"\xff\xd8\xff", "jpg"),
    "image/png": (b"\x89PNG\r\n\x1a\n", "png"),
}
EXT_TYPES = {ext: ctype for ctype, (_, ext) in FORM_TYPES.items()}
URL_PREFIX = "/api/consent/forms/"
_NAME = re.compile(r"^[0-9a-f]{32}\.(pdf|jpg|png)$")


class UnsupportedForm(YiyunError):
    status, code = 415, "not-supported"


@dataclass(frozen=True)
class StoredForm:
    key: str
    attachment: dict


def check_form(data: bytes, content_type: str | None) -> str:
    """The form's content type, or a 4xx saying what is wrong with it."""
    if not data:
        raise BadRequest("请上传签字的知情同意书扫描件 (attach the scanned, signed form)")
    if len(data) > MAX_BYTES:
        raise TooLarge(f"扫描件不能超过 {MAX_BYTES // (1024 * 1024)} MB (the form may be at most 10 MB)")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "image/jpg":
        ctype = "image/jpeg"
    if ctype not in FORM_TYPES or not data.startswith(FORM_TYPES[ctype][0]):
        raise UnsupportedForm("扫描件只能是 PDF、JPEG 或 PNG 文件 (the form must be a PDF, JPEG or PNG file)")
    return ctype


async def store_form(tenant: str, data: bytes, content_type: str | None, *, title: str) -> StoredForm:
    ctype = check_form(data, content_type)
    name = f"{uuid.uuid4().hex}.{FORM_TYPES[ctype][1]}"
    key = await get_storage().put(f"consent-forms/{tenant}/{name}", data)
    return StoredForm(key, {
        "contentType": ctype, "url": f"{URL_PREFIX}{tenant}/{name}", "size": len(data),
        # Attachment.hash is the base64 SHA-1 of the data (FHIR R4 datatypes)
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),  # noqa: S324
        "title": title, "creation": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    })


async def discard(form: StoredForm) -> None:
    """Remove a form whose consent could not be written: no file without its record."""
    await get_storage().delete(form.key)


def key_of(tenant: str, name: str) -> str:
    if not _NAME.match(name):
        raise NotFound("文件不存在 (form not found)")
    return f"consent-forms/{tenant}/{name}"


async def read_form(tenant: str, name: str) -> tuple[bytes, str]:
    return await get_storage().get(key_of(tenant, name)), EXT_TYPES[name.rsplit(".", 1)[1]]


def names_form(consent: dict, url: str) -> bool:
    """Does this Consent carry the form at `url` (as its source, or as its withdrawal form)?"""
    if (consent.get("sourceAttachment") or {}).get("url") == url:
        return True
    return any(isinstance(e, dict) and (e.get("valueAttachment") or {}).get("url") == url
               for e in consent.get("extension") or [])
