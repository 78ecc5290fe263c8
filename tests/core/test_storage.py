"""File storage through fsspec: the local folder by default, any fsspec URL when set."""

from __future__ import annotations

import pytest

from yiyun.core.errors import BadRequest, NotFound
from yiyun.core.storage import FileStorage, get_storage


async def test_local_folder_round_trip(tmp_path):
    store = FileStorage(str(tmp_path / "files"))
    key = await store.put("consultations/t1/c1/a.jpg", b"\xff\xd8\xffdata")
    assert (tmp_path / "files" / "consultations" / "t1" / "c1" / "a.jpg").read_bytes() == b"\xff\xd8\xffdata"
    assert await store.get(key) == b"\xff\xd8\xffdata"
    assert await store.exists(key)
    await store.put(key, b"new")
    assert await store.get(key) == b"new"
    assert not list((tmp_path / "files").rglob("*.part"))
    assert await store.delete(key) is True
    assert await store.delete(key) is False
    with pytest.raises(NotFound):
        await store.get(key)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "a//b", "a/../../b", "", "a/b/", "空格 name"])
async def test_keys_never_escape_the_root(tmp_path, key):
    store = FileStorage(str(tmp_path))
    with pytest.raises(BadRequest):
        await store.put(key, b"x")


async def test_any_fsspec_url(tmp_path):
    store = FileStorage("memory://yiyun-test")
    await store.put("a/b.png", b"png")
    assert await store.get("a/b.png") == b"png"
    assert not (tmp_path / "a").exists()


async def test_default_is_data_dir_files_and_setting_overrides(monkeypatch, tmp_path):
    from yiyun.core.settings import get_settings

    monkeypatch.setenv("YIYUN_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("YIYUN_STORAGE_URL", raising=False)
    get_settings.cache_clear()
    try:
        store = get_storage()
        await store.put("x.txt", b"1")
        assert (tmp_path / "var" / "files" / "x.txt").read_bytes() == b"1"
        monkeypatch.setenv("YIYUN_STORAGE_URL", "memory://elsewhere")
        get_settings.cache_clear()
        assert get_storage().url == "memory://elsewhere"
    finally:
        get_settings.cache_clear()
