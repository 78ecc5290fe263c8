"""Typed search index tables, one row per indexed value (https://hl7.org/fhir/R4/search.html#ptypes).

Every row carries the resource row id (`rid`, the key of `fhir_resource`), the tenant, the
resource type and the parameter code, so that a search parameter becomes one indexed range
condition on `(tenant, res_type, param, value...)` and the join back to `fhir_resource` is by
primary key. Each table also has an index on `(rid, param)` for deletes, `_include` and
`_sort`. Rows exist only for values present: `:missing` is a NOT IN on that parameter.

Strings compare byte-wise ("C" collation on PostgreSQL, BINARY on SQLite) so that the prefix
range `value >= :p AND value < :p || U+10FFFF` is served by a btree on both engines.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, String, Table

from yiyun.fhir.tables import RowId, metadata

# Limits of what is indexed; longer values are truncated (a search value is truncated the same way).
STRING_LEN = 255
URI_LEN = 512
ID_LEN = 64


def _text(length: int) -> String:
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _common(name: str) -> list:
    return [
        Column("rid", RowId, nullable=False),
        Column("tenant", String(64), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
    ]


def _table(name: str, *cols, lookups: list[tuple[str, ...]]) -> Table:
    t = Table(name, metadata, *_common(name), *cols)
    Index(f"ix_{name}_rid", t.c.rid, t.c.param)
    for i, cols_ in enumerate(lookups):
        Index(f"ix_{name}_q{i}", *[t.c[c] for c in cols_])
    return t


idx_string = _table(
    "fhir_idx_string",
    Column("value", _text(STRING_LEN), nullable=False),  # normalised: NFKD, accents stripped, casefolded
    Column("exact", _text(STRING_LEN), nullable=False),  # as written, for :exact
    lookups=[("tenant", "res_type", "param", "value", "rid")],  # rid: index-only scans
)

idx_token = _table(
    "fhir_idx_token",
    Column("system", _text(URI_LEN), nullable=True),
    Column("code", _text(STRING_LEN), nullable=True),
    Column("text", _text(STRING_LEN), nullable=True),  # normalised display / text, for :text
    # rid last: equality on (code, system) then yields rids in order, so the default
    # rid-ordered page is a merge join that stops after _count rows.
    lookups=[("tenant", "res_type", "param", "code", "system", "rid")],
)

idx_reference = _table(
    "fhir_idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", _text(ID_LEN), nullable=True),
    Column("url", _text(URI_LEN), nullable=True),  # absolute / canonical / urn references; NULL when local
    lookups=[
        ("tenant", "res_type", "param", "target_id", "target_type", "rid"),
        ("tenant", "res_type", "param", "url"),
    ],
)

idx_date = _table(
    "fhir_idx_date",
    Column("low", Float(53), nullable=False),  # epoch seconds, inclusive
    Column("high", Float(53), nullable=False),  # epoch seconds, exclusive
    lookups=[("tenant", "res_type", "param", "low", "rid"), ("tenant", "res_type", "param", "high", "rid")],
)

idx_number = _table(
    "fhir_idx_number",
    Column("low", Float(53), nullable=False),
    Column("high", Float(53), nullable=False),
    lookups=[("tenant", "res_type", "param", "low")],
)

idx_quantity = _table(
    "fhir_idx_quantity",
    Column("system", _text(URI_LEN), nullable=True),
    Column("code", _text(STRING_LEN), nullable=True),
    Column("unit", _text(STRING_LEN), nullable=True),
    Column("low", Float(53), nullable=False),
    Column("high", Float(53), nullable=False),
    lookups=[("tenant", "res_type", "param", "code", "low"), ("tenant", "res_type", "param", "low")],
)

idx_uri = _table(
    "fhir_idx_uri",
    Column("value", _text(URI_LEN), nullable=False),
    lookups=[("tenant", "res_type", "param", "value")],
)

# A composite parameter (https://hl7.org/fhir/R4/search.html#composite) indexes one row per
# combination of its components' values taken from the same element; each component is
# stored as a generic (sys, val, lo, hi) quadruple whose meaning follows the component type.
_comp_cols = []
for _p in ("a", "b", "c"):
    _comp_cols += [
        Column(f"{_p}_sys", _text(URI_LEN), nullable=True),
        Column(f"{_p}_val", _text(STRING_LEN), nullable=True),
        Column(f"{_p}_lo", Float(53), nullable=True),
        Column(f"{_p}_hi", Float(53), nullable=True),
    ]
idx_composite = _table("fhir_idx_composite", *_comp_cols, lookups=[("tenant", "res_type", "param", "a_val")])

TABLE_BY_TYPE = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "composite": idx_composite,
}

INDEX_TABLES = [idx_string, idx_token, idx_reference, idx_date, idx_number, idx_quantity, idx_uri, idx_composite]
