"""yiyun.fhir.validation against the official R4 examples, Synthea, and hand-made errors."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yiyun.fhir.validation import known_resource_types, validate_resource

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("YIYUN_SHARED_DATA") or REPO.parent / "shared" / "data")
EXAMPLES = SHARED / "fhir" / "r4-spec" / "examples"
SYNTHEA = SHARED / "fhir" / "synthea-r4"

needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"R4 examples not found under {SHARED}")
needs_synthea = pytest.mark.skipif(not SYNTHEA.is_dir(), reason=f"Synthea bundles not found under {SHARED}")

# Official R4 examples that break the base specification itself: for each, the
# number of errors the validator must report, a regex all their expressions match, and
# why they are errors.
_SP_NO_BASE = "SearchParameter.base is 1..* but this extension search parameter has none"
INVALID_EXAMPLES: dict[str, tuple[int, str, str]] = {
    "DeviceMetric-example.json": (
        1, r"DeviceMetric\.parent\.reference",
        "DeviceMetric.parent is Reference(Device); the example points at a DeviceDefinition",
    ),
    "DeviceUseStatement-example.json": (
        1, r"DeviceUseStatement\.reasonReference\[0\]\.reference",
        "reasonReference allows Condition|Observation|DiagnosticReport|DocumentReference|Media, not Procedure",
    ),
    "MedicationRequest-medrx0301.json": (
        1, r"MedicationRequest\.dispenseRequest\.performer\.reference",
        "dispenseRequest.performer is Reference(Organization); the example uses a Practitioner",
    ),
    "Observation-clinical-gender.json": (
        1, r"Observation\.performer\[0\]\.reference",
        "Observation.performer does not allow Encounter",
    ),
    "Questionnaire-qs1.json": (
        32, r"Questionnaire\.item\[0\](\.item\[\d+\])+\.linkId",
        "Questionnaire.item.linkId is 1..1; 32 nested display and group items have none",
    ),
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        1, r"SearchParameter\.id", "the id has 68 characters; an id has at most 64",
    ),
    **{
        f"SearchParameter-{name}.json": (1, r"SearchParameter\.base", _SP_NO_BASE)
        for name in (
            "codesystem-extensions-CodeSystem-author",
            "codesystem-extensions-CodeSystem-effective",
            "codesystem-extensions-CodeSystem-end",
            "codesystem-extensions-CodeSystem-keyword",
            "codesystem-extensions-CodeSystem-workflow",
            "valueset-extensions-ValueSet-author",
            "valueset-extensions-ValueSet-effective",
            "valueset-extensions-ValueSet-end",
            "valueset-extensions-ValueSet-keyword",
            "valueset-extensions-ValueSet-workflow",
        )
    },
}


def errors(resource: object) -> list[tuple[str, str]]:
    """(code, expression) of each error issue."""
    out = []
    for issue in validate_resource(resource):
        assert issue.severity in ("error", "warning")
        assert isinstance(issue.diagnostics, str) and issue.diagnostics
        if issue.severity == "error":
            out.append((issue.code, issue.expression[0] if issue.expression else ""))
    return out


def paths(resource: object) -> list[str]:
    return [path for _, path in errors(resource)]


def example_files() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []


# -- official examples and Synthea ------------------------------------------------


@needs_examples
def test_there_are_814_examples_and_the_exceptions_exist() -> None:
    names = set(example_files())
    assert len(names) == 814
    assert set(INVALID_EXAMPLES) <= names


@needs_examples
@pytest.mark.parametrize("name", example_files())
def test_official_example_validates(name: str) -> None:
    resource = orjson.loads((EXAMPLES / name).read_bytes())
    found = errors(resource)
    if name in INVALID_EXAMPLES:
        count, pattern, _reason = INVALID_EXAMPLES[name]
        assert len(found) == count, found
        assert all(re.fullmatch(pattern, path) for _, path in found), found
    else:
        assert found == []


@pytest.fixture(scope="module")
def synthea_bundles() -> list[dict]:
    if not SYNTHEA.is_dir():
        pytest.skip(f"Synthea bundles not found under {SHARED}")
    return [orjson.loads(p.read_bytes()) for p in sorted(SYNTHEA.glob("*.json"))]


@needs_synthea
def test_every_synthea_bundle_and_resource_validates(synthea_bundles: list[dict]) -> None:
    count = 0
    for bundle in synthea_bundles:
        assert errors(bundle) == []  # the Bundle, with every entry.resource inside it
        for entry in bundle["entry"]:
            count += 1
            assert errors(entry["resource"]) == [], entry["resource"]["id"]
    assert count == 19293


# -- public API -------------------------------------------------------------------


def test_known_resource_types_are_the_146_concrete_r4_types() -> None:
    types = known_resource_types()
    assert isinstance(types, frozenset)
    assert len(types) == 146
    assert {"Patient", "Observation", "Bundle", "Parameters", "Binary", "QuestionnaireResponse"} <= types
    assert not {"Resource", "DomainResource", "MetadataResource", "HumanName"} & types


def test_a_minimal_valid_resource_has_no_issues() -> None:
    assert validate_resource({"resourceType": "Patient"}) == []
    assert validate_resource({"resourceType": "Observation", "status": "final", "code": {"text": "BP"}}) == []


# -- rejections, each at its exact path -------------------------------------------


def obs(**extra: object) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, **extra}


def test_resource_type_missing_unknown_or_abstract() -> None:
    assert errors({"id": "1"}) == [("required", "resourceType")]
    assert errors({"resourceType": "Patientt"}) == [("not-supported", "resourceType")]
    assert errors({"resourceType": "DomainResource"}) == [("not-supported", "resourceType")]
    assert errors({"resourceType": 7}) == [("structure", "resourceType")]


@pytest.mark.parametrize("value", [None, 1, "Patient", [], [{"resourceType": "Patient"}], True])
def test_a_resource_must_be_an_object(value: object) -> None:
    assert len(errors(value)) == 1


def test_unknown_elements_are_rejected_at_any_depth() -> None:
    assert errors({"resourceType": "Patient", "nickname": "Bo"}) == [("structure", "Patient.nickname")]
    middle = {"resourceType": "Patient", "name": [{"family": "Zhang", "middle": "X"}]}
    assert paths(middle) == ["Patient.name[0].middle"]
    # a primitive extension sibling of a complex element is not a thing
    assert paths({"resourceType": "Patient", "_name": [{"id": "a"}]}) == ["Patient._name"]
    # the JSON name of a choice type must be one of the allowed types
    assert paths(obs(valueFoo="x")) == ["Observation.valueFoo"]
    assert paths(obs(value={"value": 1})) == ["Observation.value"]


def test_wrong_primitive_types() -> None:
    assert errors({"resourceType": "Patient", "active": "true"}) == [("value", "Patient.active")]
    assert errors({"resourceType": "Patient", "birthDate": "2020-13-45"}) == [("value", "Patient.birthDate")]
    assert errors({"resourceType": "Patient", "id": "has spaces"}) == [("value", "Patient.id")]
    assert paths({"resourceType": "Patient", "birthDate": "2021-02-29"}) == ["Patient.birthDate"]
    assert paths({"resourceType": "Patient", "birthDate": "2020-02-29"}) == []
    assert paths({"resourceType": "Patient", "name": [{"given": ["Wei", 5]}]}) == ["Patient.name[0].given[1]"]
    assert paths({"resourceType": "Patient", "name": [{"family": ""}]}) == ["Patient.name[0].family"]
    assert paths({"resourceType": "Patient", "id": "x" * 65}) == ["Patient.id"]
    assert paths({"resourceType": "Patient", "multipleBirthInteger": 2**31}) == ["Patient.multipleBirthInteger"]
    assert paths({"resourceType": "Patient", "multipleBirthInteger": 1.0}) == ["Patient.multipleBirthInteger"]
    assert paths({"resourceType": "Patient", "gender": " male"}) == ["Patient.gender"]
    assert paths(obs(valueQuantity={"value": "5"})) == ["Observation.valueQuantity.value"]
    assert paths(obs(valueQuantity={"value": float("nan")})) == ["Observation.valueQuantity.value"]
    assert paths(obs(valueQuantity={"value": True})) == ["Observation.valueQuantity.value"]
    assert paths(obs(issued="2020-01-01")) == ["Observation.issued"]  # instant needs time and zone
    assert paths(obs(effectiveDateTime="2020-01-01T10:00:00")) == ["Observation.effectiveDateTime"]
    assert paths(obs(valueTime="25:00:00")) == ["Observation.valueTime"]
    assert paths(obs(valueString="tab\tand\nnewline are fine")) == []
    assert paths(obs(valueString="bell\x07")) == ["Observation.valueString"]
    assert paths(obs(valueInteger=True)) == ["Observation.valueInteger"]
    assert paths({"resourceType": "Patient", "photo": [{"data": "not base64!"}]}) == ["Patient.photo[0].data"]
    assert paths({"resourceType": "Patient", "photo": [{"data": "aGVs bG8="}]}) == []
    assert paths({"resourceType": "Patient", "implicitRules": "http://a b"}) == ["Patient.implicitRules"]
    narrative = {"resourceType": "Patient", "text": {"status": "generated", "div": "<p>x</p>"}}
    assert paths(narrative) == ["Patient.text.div"]


def test_missing_required_elements() -> None:
    assert errors({"resourceType": "Observation"}) == [
        ("required", "Observation.status"),
        ("required", "Observation.code"),
    ]
    assert errors({"resourceType": "Observation", "code": {"text": "x"}}) == [("required", "Observation.status")]
    # a required primitive may be present through its extension alone
    assert paths(obs(status=None) | {"_status": {"extension": [{"url": "http://x", "valueString": "y"}]}}) == [
        "Observation.status"
    ]
    del_status = obs()
    del del_status["status"]
    del_status["_status"] = {"extension": [{"url": "http://x", "valueString": "y"}]}
    assert paths(del_status) == []
    assert paths({"resourceType": "Patient", "link": [{"type": "seealso"}]}) == ["Patient.link[0].other"]


def test_arrays_versus_single_values() -> None:
    assert errors({"resourceType": "Patient", "gender": ["male"]}) == [("structure", "Patient.gender")]
    assert errors({"resourceType": "Patient", "name": {"family": "Li"}}) == [("structure", "Patient.name")]
    assert errors({"resourceType": "Patient", "name": [{"given": "Wei"}]}) == [("structure", "Patient.name[0].given")]
    assert errors({"resourceType": "Patient", "name": []}) == [("structure", "Patient.name")]


def test_two_choice_values_at_once() -> None:
    assert errors(obs(valueString="a", valueInteger=1)) == [("structure", "Observation.valueInteger")]
    assert paths(obs(valueString="a", _valueBoolean={"id": "x", "extension": [{"url": "u", "valueCode": "c"}]})) == [
        "Observation._valueBoolean"
    ]
    assert paths(obs(valueString="a", _valueString={"extension": [{"url": "u", "valueCode": "c"}]})) == []


def test_reference_target_types() -> None:
    def org(ref: str) -> list[tuple[str, str]]:
        return errors({"resourceType": "Patient", "managingOrganization": {"reference": ref}})

    assert org("Patient/1") == [("value", "Patient.managingOrganization.reference")]
    assert org("Organization/1") == []
    assert org("Patient/1/_history/2") == [("value", "Patient.managingOrganization.reference")]
    assert org("https://fhir.example.cn/R4/Patient/1") == [("value", "Patient.managingOrganization.reference")]
    assert org("https://fhir.example.cn/R4/Organization/1/_history/3") == []
    assert org("Patient?identifier=http://x|1") == [("value", "Patient.managingOrganization.reference")]
    assert org("Organization?identifier=http://x|1") == []
    for skipped in ("urn:uuid:0b5e2e0c-7f1c-4b8e-9a8d-1c2b3a4d5e6f", "urn:oid:1.2.3", "#org1"):
        assert org(skipped) == []
    typed = {"resourceType": "Patient", "managingOrganization": {"type": "Patient", "display": "x"}}
    assert paths(typed) == ["Patient.managingOrganization.type"]
    # Reference(Any) and references inside datatypes
    provenance = {"resourceType": "Provenance", "target": [{"reference": "Patient/1"}],
                  "recorded": "2020-01-01T00:00:00Z", "agent": [{"who": {"reference": "Device/1"}}]}
    assert paths(provenance) == []
    note = obs(note=[{"authorReference": {"reference": "Encounter/9"}, "text": "x"}])
    assert paths(note) == ["Observation.note[0].authorReference.reference"]


def test_required_bindings() -> None:
    assert errors({"resourceType": "Patient", "gender": "man"}) == [("code-invalid", "Patient.gender")]
    assert paths({"resourceType": "Patient", "gender": "female"}) == []
    # code in a datatype
    assert paths({"resourceType": "Patient", "name": [{"use": "nickname"}]}) == []
    assert paths({"resourceType": "Patient", "name": [{"use": "alias"}]}) == ["Patient.name[0].use"]
    # CodeableConcept: a coding from the bound system must match
    def condition(*codings: dict) -> dict:
        return {"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                "clinicalStatus": {"coding": list(codings)}}

    clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    assert paths(condition({"system": clinical, "code": "active"})) == []
    assert errors(condition({"system": clinical, "code": "ongoing"})) == [
        ("code-invalid", "Condition.clinicalStatus.coding[0].code")
    ]
    assert paths(condition({"system": clinical, "code": "ongoing"}, {"system": clinical, "code": "active"})) == []
    # a coding without a code, or from another system, cannot be judged here
    assert paths(condition({"system": clinical, "display": "Active"})) == []
    assert paths(condition({"system": "http://snomed.info/sct", "code": "55561003"})) == []
    # value sets whose code systems are not available are not checked (UCUM, MIME types)
    assert paths({"resourceType": "Binary", "contentType": "application/x-anything"}) == []


def test_null_values() -> None:
    assert errors({"resourceType": "Patient", "active": None}) == [("structure", "Patient.active")]
    assert errors({"resourceType": "Patient", "name": [None]}) == [("structure", "Patient.name[0]")]
    assert errors({"resourceType": "Patient", "name": None}) == [("structure", "Patient.name")]
    assert paths({"resourceType": "Patient", "name": [{"given": ["Wei", None]}]}) == ["Patient.name[0].given[1]"]
    # a null in a primitive array is fine when its extension carries the position
    aligned = {"given": ["Wei", None], "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}
    assert paths({"resourceType": "Patient", "name": [aligned]}) == []
    misaligned = {"given": ["Wei"], "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}
    assert paths({"resourceType": "Patient", "name": [misaligned]}) == ["Patient.name[0]._given"]


def test_empty_objects_and_extensions() -> None:
    assert errors({"resourceType": "Patient", "maritalStatus": {}}) == [("invariant", "Patient.maritalStatus")]
    ext = {"resourceType": "Patient", "extension": [{"valueString": "x"}]}
    assert errors(ext) == [("required", "Patient.extension[0].url")]
    both = {"url": "http://x", "valueString": "x", "extension": [{"url": "http://y", "valueCode": "c"}]}
    assert errors({"resourceType": "Patient", "extension": [both]}) == [("invariant", "Patient.extension[0]")]
    assert errors({"resourceType": "Patient", "modifierExtension": [{"url": "http://x"}]}) == [
        ("invariant", "Patient.modifierExtension[0]")
    ]
    two = {"url": "http://x", "valueString": "x", "valueCode": "x"}
    assert paths({"resourceType": "Patient", "extension": [two]}) == ["Patient.extension[0].valueCode"]
    nested = {"url": "http://x", "extension": [{"url": "a", "valueQuantity": {"value": "1"}}]}
    assert paths({"resourceType": "Patient", "extension": [nested]}) == [
        "Patient.extension[0].extension[0].valueQuantity.value"
    ]
    birth = {"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://x", "valueBoolean": 1}]}}
    assert paths(birth) == ["Patient._birthDate.extension[0].valueBoolean"]


def test_invalid_contained_resource() -> None:
    patient = {"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o1", "active": "yes"}]}
    assert errors(patient) == [("value", "Patient.contained[0].active")]
    patient["contained"].append({"resourceType": "Nope"})
    assert paths(patient)[-1] == "Patient.contained[1].resourceType"
    nested = {"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o1",
                                                       "contained": [{"resourceType": "Patient"}]}]}
    assert errors(nested) == [("invariant", "Patient.contained[0].contained")]


def test_bad_resource_inside_a_bundle_entry() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
        for _ in range(4)
    ]}
    assert errors(bundle) == []
    bad = copy.deepcopy(bundle)
    bad["entry"][3]["resource"] = {"resourceType": "Observation", "status": "done", "code": {"text": "x"}}
    assert errors(bad) == [("code-invalid", "Bundle.entry[3].resource.status")]
    bad["entry"][1]["request"]["method"] = "FETCH"
    assert paths(bad) == ["Bundle.entry[1].request.method", "Bundle.entry[3].resource.status"]
    params = {"resourceType": "Parameters",
              "parameter": [{"name": "r", "resource": {"resourceType": "Patient", "x": 1}}]}
    assert paths(params) == ["Parameters.parameter[0].resource.x"]


def test_content_reference_elements() -> None:
    q = {"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "colour": "red"}]}
    ]}
    assert paths(q) == ["Questionnaire.item[0].item[0].colour"]
    q["item"][0]["item"][0] = {"type": "string"}
    assert paths(q) == ["Questionnaire.item[0].item[0].linkId"]


def test_simple_quantity_has_no_comparator() -> None:
    dose = {"resourceType": "MedicationStatement", "status": "active", "subject": {"reference": "Patient/1"},
            "medicationCodeableConcept": {"text": "aspirin"},
            "dosage": [{"doseAndRate": [{"doseQuantity": {"value": 1, "comparator": "<"}}]}]}
    assert paths(dose) == ["MedicationStatement.dosage[0].doseAndRate[0].doseQuantity.comparator"]
    dose["dosage"][0]["doseAndRate"][0]["doseQuantity"] = {"value": 1, "unit": "tablet"}
    assert paths(dose) == []


def test_deep_nesting_returns_an_issue_instead_of_raising() -> None:
    ext: dict = {"url": "http://x", "valueString": "leaf"}
    for _ in range(5000):
        ext = {"url": "http://x", "extension": [ext]}
    issues = validate_resource({"resourceType": "Patient", "extension": [ext]})
    assert issues and issues[-1].code == "too-costly"
    cyclic: dict = {"resourceType": "Patient"}
    cyclic["contained"] = [cyclic]
    assert validate_resource(cyclic)


# -- never raises -------------------------------------------------------------------

_NAMES = [
    "resourceType", "id", "meta", "text", "div", "status", "contained", "extension", "modifierExtension",
    "url", "valueString", "_valueString", "valueQuantity", "valueCodeableConcept", "value", "unit", "code",
    "coding", "system", "display", "reference", "type", "subject", "name", "given", "_given", "family",
    "birthDate", "_birthDate", "gender", "active", "entry", "resource", "request", "method", "item", "linkId",
    "answer", "parameter", "part", "component", "effectiveDateTime", "managingOrganization", "identifier", "",
]
_TYPES = ["Patient", "Observation", "Bundle", "Questionnaire", "QuestionnaireResponse", "Parameters", "X", ""]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(_TYPES)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(_NAMES) | st.text(max_size=6), children, max_size=5),
    max_leaves=40,
)
resource_like = st.builds(
    lambda rt, body: {**body, "resourceType": rt} if isinstance(body, dict) else body,
    st.sampled_from(_TYPES),
    json_values,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, resource_like))
def test_random_json_never_raises(value: object) -> None:
    issues = validate_resource(value)
    assert isinstance(issues, list)
    for issue in issues:
        assert issue.severity == "error" and issue.code and issue.diagnostics
        assert len(issue.expression) == 1 and isinstance(issue.expression[0], str)


_SAMPLE = {
    "resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b5e2e0c-7f1c-4b8e-9a8d-1c2b3a4d5e6f", "request": {"method": "POST", "url": "Patient"},
         "resource": {"resourceType": "Patient", "id": "p1", "active": True, "gender": "female",
                      "birthDate": "1980-02-29",
                      "name": [{"family": "Zhang", "given": ["Wei", None],
                                "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}],
                      "managingOrganization": {"reference": "Organization/o1"},
                      "extension": [{"url": "http://x",
                                     "valueCodeableConcept": {"coding": [{"system": "s", "code": "c"}]}}],
                      "contained": [{"resourceType": "Organization", "id": "o1", "name": "Clinic"}]}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "bw"},
                      "valueQuantity": {"value": 70.5, "unit": "kg"}, "subject": {"reference": "Patient/p1"},
                      "effectiveDateTime": "2020-01-01T10:00:00+08:00",
                      "component": [{"code": {"text": "x"}, "valueString": "y"}]},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Questionnaire", "status": "active",
                      "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "boolean"}]}]}},
    ],
}


def _slots(node: object, out: list) -> list:
    """Every (container, key) in a JSON tree, so one position can be replaced."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out.append((node, key))
        _slots(child, out)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_resources_never_raise(data: st.DataObject) -> None:
    sample = copy.deepcopy(_SAMPLE)
    assert validate_resource(sample) == []
    slots = _slots(sample, [])
    for _ in range(data.draw(st.integers(1, 3))):
        container, key = data.draw(st.sampled_from(slots))
        container[key] = data.draw(json_values)
    for issue in validate_resource(sample):
        assert issue.severity == "error" and issue.code and len(issue.expression) == 1
