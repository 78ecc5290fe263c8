"""FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html)."""

from __future__ import annotations

from yiyun.core.errors import Unprocessable


def apply_fhirpath_patch(document: dict, parameters: dict) -> dict:
    raise Unprocessable("暂不支持 FHIRPath Patch，请使用 JSON Patch (FHIRPath Patch is not supported yet)")
