"""Images in a consultation: checked, cleaned, stored through `yiyun.core.storage`.

An upload is accepted only if it is small enough (10 MB), its first bytes are those of a
JPEG, PNG or WebP file (the name and the declared type are not trusted), and Pillow can
decode all of it. It is then re-encoded: that drops EXIF (a phone photo's GPS position,
camera serial) and anything hidden after the image data, and applies the EXIF
orientation first so the picture still shows upright.
"""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import insert, select

from yiyun.core.errors import BadRequest, NotFound, TooLarge, Unprocessable
from yiyun.core.storage import get_storage
from yiyun.fhir.model import now_us
from yiyun.hospital.consultation_models import consult_upload
from yiyun.hospital.consultations import service
from yiyun.hospital.consultations.service import Work

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a decompression bomb is refused before it is decoded
MAX_SIDE = 4096  # larger photos are scaled down: enough for a skin or wound photo
ALLOWED = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WEBP": ("image/webp", "webp")}


@dataclass
class CleanImage:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


def sniff(data: bytes) -> str | None:
    """The format from the file's magic bytes (the only thing about a file that is not chosen
    by its name): JPEG FF D8 FF, PNG 89 50 4E 47 0D 0A 1A 0A, WebP RIFF....WEBP."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _refuse() -> Unprocessable:
    return Unprocessable("只能上传 JPEG、PNG 或 WebP 图片 (only JPEG, PNG or WebP images are accepted)",
                         code="invalid")


def clean_image(data: bytes) -> CleanImage:
    """Check and re-encode an uploaded image; 413 if too large, 422 if not an allowed image."""
    if len(data) > MAX_BYTES:
        raise TooLarge(f"图片不能超过 {MAX_BYTES // (1024 * 1024)} MB (image larger than 10 MB)")
    if not data:
        raise BadRequest("文件为空 (empty file)")
    fmt = sniff(data)
    if fmt is None:
        raise _refuse()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                if probe.format != fmt:
                    raise _refuse()
                if probe.width * probe.height > MAX_PIXELS:
                    raise TooLarge("图片像素过多 (image has too many pixels)")
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                img.thumbnail((MAX_SIDE, MAX_SIDE))
                return _encode(img, fmt)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise _refuse() from exc


def _encode(img: Image.Image, fmt: str) -> CleanImage:
    out = io.BytesIO()
    if fmt == "JPEG":
        img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
        img.save(out, "JPEG", quality=88, optimize=True)  # no exif= argument: metadata is dropped
    elif fmt == "PNG":
        if img.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            img = img.convert("RGBA")
        img.save(out, "PNG", optimize=True)
    else:
        img.save(out, "WEBP", quality=85)
    content_type, ext = ALLOWED[fmt]
    return CleanImage(out.getvalue(), content_type, ext, img.width, img.height)


def image_url(cid: str, upload_id: str) -> str:
    return f"/api/consultations/{cid}/images/{upload_id}"


async def store_image(work: Work, cid: str, clean: CleanImage) -> dict:
    """Write the bytes and the upload's row; returns a FHIR Attachment for it.
    The caller's unit of work removes nothing from storage on rollback: `discard` does."""
    upload_id = uuid.uuid4().hex
    key = f"consultations/{work.party.tenant}/{cid}/{upload_id}.{clean.extension}"
    await get_storage().put(key, clean.data)
    await work.conn.execute(insert(consult_upload).values(
        tenant=work.party.tenant, id=upload_id, consultation_id=cid, uploader=work.party.ref, storage_key=key,
        content_type=clean.content_type, size=len(clean.data), sha256=hashlib.sha256(clean.data).hexdigest(),
        width=clean.width, height=clean.height, created_us=now_us()))
    return {
        "contentType": clean.content_type,
        "url": image_url(cid, upload_id),
        "size": len(clean.data),
        # Attachment.hash is the base64 SHA-1 of the data (https://hl7.org/fhir/R4/datatypes.html#Attachment)
        "hash": base64.b64encode(hashlib.sha1(clean.data).digest()).decode(),
        "title": f"{upload_id}.{clean.extension}",
    }


async def discard(attachment: dict | None, tenant: str, cid: str) -> None:
    if attachment:
        name = attachment["title"]
        await get_storage().delete(f"consultations/{tenant}/{cid}/{name}")


async def add_form_photo(work: Work, cid: str, attachment: dict) -> dict:
    """Attach a photo to the pre-consultation form (the QuestionnaireResponse's "photos" item)."""
    row, relation = await service.load(work, cid, lock=True)
    if relation != "patient":
        raise service.Forbidden("只有患者可以补充问诊单 (only the patient fills in the form)")
    service._require_open(row, "补充问诊单")
    if row.form_id:
        form = dict((await work.repo.read("QuestionnaireResponse", row.form_id)).resource)
        form.pop("meta", None)
    else:
        form = service._form_resource(cid, work.party, {}, now_us())
    items = [i for i in form.get("item") or [] if i.get("linkId") != "photos"]
    photos = next((i for i in form.get("item") or [] if i.get("linkId") == "photos"),
                  {"linkId": "photos", "text": "照片", "answer": []})
    photos["answer"] = [*photos.get("answer", []), {"valueAttachment": attachment}]
    form["item"] = [*items, photos]
    if row.form_id:
        await work.repo.update("QuestionnaireResponse", row.form_id, form)
    else:
        stored = (await work.repo.create(form)).stored
        c = service.consult_session.c
        await work.conn.execute(service.update(service.consult_session)
                                .where(c.tenant == row.tenant, c.id == cid).values(form_id=stored.res_id))
    work.publish(cid, {"type": "form", "consultation": cid, "photo": attachment["url"]})
    return attachment


async def read_image(work: Work, cid: str, upload_id: str) -> tuple[bytes, str]:
    """An image of a consultation the caller may see (404 otherwise, and for other ids)."""
    row, _ = await service.load(work, cid)
    u = consult_upload.c
    hit = (await work.conn.execute(select(consult_upload).where(
        u.tenant == row.tenant, u.consultation_id == cid, u.id == str(upload_id)[:32]))).first()
    if hit is None:
        raise NotFound(f"未找到图片 {upload_id} (image not found)")
    return await get_storage().get(hit.storage_key), hit.content_type
