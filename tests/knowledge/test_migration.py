"""The 0002_knowledge migration creates and drops the knowledge tables."""

from __future__ import annotations

import sqlite3


def _tables(path):
    with sqlite3.connect(path) as c:
        return {r[0] for r in c.execute("select name from sqlite_master where type='table' and name like 'knowledge%'")}


def test_upgrade_and_downgrade(tmp_path):
    from yiyun.core import migrations

    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"
    migrations.upgrade("0002_knowledge", url)
    assert _tables(path) == {"knowledge_entry", "knowledge_revision", "knowledge_feedback", "knowledge_import"}
    migrations.downgrade("0001_fhir_store", url)
    assert _tables(path) == set()
