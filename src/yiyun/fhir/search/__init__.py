"""FHIR R4 search: index extraction at write time and query execution.

https://hl7.org/fhir/R4/search.html — every SearchParameter of R4 4.0.1 is compiled into
an extractor (`registry`, `compiler`); values land in typed index tables (`tables`) when a
resource is written (`write_index`) and searches are indexed SQL over them (`search`).
`match` applies a query as a rule (SMART granular scopes): to one resource in memory, from
the same extracted values, or as the same SQL condition.

Supported: all parameter types (string, token, reference, date, number, quantity, uri,
composite) of every resource type; `_id`, `_lastUpdated`, `_tag`, `_profile`, `_security`,
`_source`; modifiers `:missing` (all types), `:exact`/`:contains` (string), `:not`/`:text`/
`:of-type` (token), `:Type`/`:identifier` (reference), `:below`/`:above` (uri); prefixes
eq ne gt lt ge le sa eb ap (ap = 10% of the distance to now for dates, at least one day; 10%
of the value for numbers); chains of any depth up to 4 and nested `_has`; `_include` /
`_revinclude` with `:iterate` (3 levels); `_sort`; `_count`; `_summary`; `_total`;
`_elements` (returned for the caller to apply); `_type` (system search); keyset paging
(`_cursor`) or, with `_sort`, `_offset`; custom SearchParameter resources per tenant.

Not supported (an unknown-parameter warning, or 400 under strict handling): `_text`,
`_content`, `_query`, `_filter`, `_list`, `_contained`, `near` (Location special);
token `:in`/`:not-in`/`:above`/`:below` (need terminology services; always 400); UCUM
unit conversion for quantities; custom composite SearchParameters.
"""

from __future__ import annotations

from yiyun.fhir.search.engine import SearchResult, search
from yiyun.fhir.search.index import analyze, delete_index, extract, reindex, write_index
from yiyun.fhir.search.query import SearchError
from yiyun.fhir.search.registry import SearchParamDef, builtin_registry
from yiyun.fhir.search.tables import INDEX_TABLES


def known_params(res_type: str) -> dict[str, SearchParamDef]:
    """Built-in parameters of a resource type (incl. the common ones), for the CapabilityStatement.
    Parameters this server does not support (`_text`, `_content`, `_query`, `near`) are left out."""
    from yiyun.fhir.search.registry import UNSUPPORTED_PARAMS

    return {
        code: d
        for code, d in builtin_registry().params(res_type).items()
        if code not in UNSUPPORTED_PARAMS and d.type != "special" and (d.expression or code in ("_id", "_lastUpdated"))
    }


__all__ = [
    "INDEX_TABLES",
    "SearchError",
    "SearchParamDef",
    "analyze",
    "SearchResult",
    "delete_index",
    "extract",
    "known_params",
    "reindex",
    "search",
    "write_index",
]
