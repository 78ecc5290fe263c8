"""File storage through fsspec: a local folder by default, any fsspec URL when configured.

DESIGN.md ("Embedded by default, real engines at scale"): files live in
`<data_dir>/files` unless `YIYUN_STORAGE_URL` names another place, e.g.
`s3://bucket/yiyun` (with s3fs installed) or `memory://yiyun` in tests. Callers name
files by a relative key (`consultation/t-1/abc.jpg`); keys never escape the root.

fsspec's file systems are synchronous; calls run in a worker thread so the event loop
keeps serving while a file is written.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from functools import lru_cache

import fsspec

from yiyun.core.errors import BadRequest, NotFound
from yiyun.core.settings import Settings, get_settings

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def check_key(key: str) -> str:
    """A relative key of plain segments: no `..`, no absolute path, no empty segment."""
    if not isinstance(key, str) or len(key) > 512 or not _KEY.match(key) or ".." in key.split("/"):
        raise BadRequest(f"文件名不合法: {key!r} (invalid storage key)")
    return key


class FileStorage:
    """Bytes by key under one root of one fsspec file system."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, check_key(key))

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        parent = posixpath.dirname(path)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        # write beside, then move into place: a reader never sees half a file
        tmp = path + ".part"
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, path)

    def _get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with self.fs.open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise NotFound(f"文件不存在: {key} (file not found)") from exc

    def _delete(self, key: str) -> bool:
        path = self._path(key)
        if not self.fs.exists(path):
            return False
        self.fs.rm(path)
        return True

    async def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key` (replacing what was there); returns the key."""
        await asyncio.to_thread(self._put, key, bytes(data))
        return key

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.fs.exists, self._path(key))

    async def delete(self, key: str) -> bool:
        """Remove `key`; False when there was nothing to remove."""
        return await asyncio.to_thread(self._delete, key)


def storage_url(settings: Settings) -> str:
    return settings.storage_url or str((settings.data_dir / "files").resolve())


@lru_cache(maxsize=8)
def _storage_for(url: str) -> FileStorage:
    return FileStorage(url)


def get_storage(settings: Settings | None = None) -> FileStorage:
    """The configured storage (one per URL per process)."""
    return _storage_for(storage_url(settings or get_settings()))
