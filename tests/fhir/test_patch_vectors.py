"""JSON Patch conformance vectors (FHIR/fhir-test-cases r4/patch/json-patch-tests.json)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared
from yiyun.core.errors import YiyunError
from yiyun.fhir.patch import apply_json_patch


def _cases():
    path = shared("fhir", "test-cases", "r4", "patch", "json-patch-tests.json")
    return json.loads(path.read_text())


def test_every_json_patch_vector():
    cases = _cases()
    assert len(cases) == 16
    for case in cases:
        if "error" in case:
            with pytest.raises(YiyunError):
                apply_json_patch(case["doc"], case["patch"])
        else:
            assert apply_json_patch(case["doc"], case["patch"]) == case["expected"], case["comment"]


def test_failed_patch_leaves_the_input_untouched():
    doc = {"resourceType": "Patient", "name": [{"family": "张"}]}
    with pytest.raises(YiyunError):
        apply_json_patch(doc, [{"op": "remove", "path": "/name/0"}, {"op": "test", "path": "/x", "value": 1}])
    assert doc == {"resourceType": "Patient", "name": [{"family": "张"}]}
