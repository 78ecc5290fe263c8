"""The resource types this store serves: every R4 resource type."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def resource_types() -> frozenset[str]:
    from yiyun.fhir.validation import known_resource_types

    return frozenset(known_resource_types())


def is_resource_type(name: str) -> bool:
    return name in resource_types()
