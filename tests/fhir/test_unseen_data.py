"""The store with data it has never seen: random but valid resources over HTTP.

Each generated resource is created, read back equal (apart from `meta`), found again by
searches built from its own values, and not found by a value that differs. Random
transaction Bundles of `urn:uuid:`-linked resources load atomically with every reference
resolved. Search semantics: https://hl7.org/fhir/R4/search.html (string prefix, token
system|code, date ranges at the precision written, quantity ranges at the precision of
the search value, references); transactions: https://hl7.org/fhir/R4/http.html#trules.

Hypothesis examples share one tenant per test, so a search checks that the resource is
(or is not) among the matches rather than that it is the only match.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from decimal import Decimal

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

FHIR = "/fhir/R4"
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"
DRUGS = "http://yiyun.test/CodeSystem/drug-catalogue"

# -- values --------------------------------------------------------------------------------
# Names use letters only (no digits), so a name prefix followed by a digit matches nothing.

_LETTERS = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5),  # CJK unified ideographs
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5),
    st.characters(min_codepoint=0x20000, max_codepoint=0x2A6D6),  # CJK extension B (4-byte UTF-8)
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZàáâäåæçèéêëìíîïñòóôöøùúûüýÿßŁłŒœŠšŽžİıǅ"),
    st.characters(min_codepoint=0x0391, max_codepoint=0x03A9).filter(lambda c: c != "\u03a2"),  # Greek
    st.characters(min_codepoint=0x0410, max_codepoint=0x044F),  # Cyrillic
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),  # Hangul syllables
    st.characters(min_codepoint=0x3041, max_codepoint=0x3096),  # Hiragana
    st.characters(min_codepoint=0xFF21, max_codepoint=0xFF3A),  # full-width Latin, as IMEs type it
    st.sampled_from("ﬁﬂ"),  # ligatures that decompose into two letters
)
_MARKS = st.characters(min_codepoint=0x0300, max_codepoint=0x036F)  # combining diacritics


@st.composite
def name_part(draw) -> str:
    """Letters, each maybe with a combining mark, maybe split by '·', '-', "'" or a space."""
    words = []
    for _ in range(draw(st.integers(1, 2))):
        letters = draw(st.lists(st.tuples(_LETTERS, st.sampled_from(["", "", "", "mark"])), min_size=1, max_size=6))
        words.append("".join(c + (draw(_MARKS) if m else "") for c, m in letters))
    if draw(st.integers(0, 30)) == 30:
        words = [draw(st.text(_LETTERS, min_size=250, max_size=300))]  # longer than the index keeps
    seps = [draw(st.sampled_from(["·", "-", "'", " "])) for _ in words[1:]]
    return words[0] + "".join(s + w for s, w in zip(seps, words[1:]))


# Identifier values: any FHIR string (no control characters), including the characters
# search values must escape (, | $ \), without leading or trailing whitespace.
_ID_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp")), min_size=1, max_size=16
).map(str.strip).filter(bool)
# FHIR `code`: no leading, trailing or repeated whitespace (https://hl7.org/fhir/R4/datatypes.html#code)
_CODE_TEXT = _ID_TEXT.map(lambda s: re.sub(r"\s", "_", s, flags=re.ASCII))
_SYSTEMS = st.one_of(
    st.sampled_from(["urn:oid:2.16.156.10011.1.3", "http://yiyun.test/mrn", "https://hospital.example.cn/id|v2",
                     "http://医院.中国/病案号", "https://example.org/ids?type=mrn&v=1,2"]),
    st.uuids().map(lambda u: f"urn:uuid:{u}"),
    st.integers(1, 10**6).map(lambda n: f"http://h{n}.example.cn/patient-id"),
)

_MIN, _MAX = dt.datetime(1, 1, 2, tzinfo=dt.UTC), dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
_OFFSETS = st.sampled_from([0, 480, -300, 330, 345, 525, 765, 840, -720, -570, 60])  # minutes from UTC


@st.composite
def instants(draw, near_now: bool = False) -> dt.datetime:
    if near_now and draw(st.integers(0, 4)):
        lo, hi = dt.datetime(1900, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    else:
        lo, hi = _MIN, _MAX
    return draw(st.datetimes(min_value=lo.replace(tzinfo=None), max_value=hi.replace(tzinfo=None))).replace(
        tzinfo=dt.UTC, microsecond=0
    ) + dt.timedelta(milliseconds=draw(st.integers(0, 999)))


def render(at: dt.datetime, precision: str, offset: int) -> str:
    """A FHIR date/dateTime at `precision` (Y, M, D, s, ms) in the zone `offset` minutes from UTC."""
    return local_text(at.astimezone(dt.timezone(dt.timedelta(minutes=offset))), precision)


def local_text(local: dt.datetime, precision: str) -> str:
    offset = int(local.utcoffset().total_seconds() // 60)
    if precision == "Y":
        return f"{local.year:04d}"
    if precision == "M":
        return f"{local.year:04d}-{local.month:02d}"
    if precision == "D":
        return f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    zone = "Z" if offset == 0 and precision == "s" else local.strftime("%z")
    zone = zone if zone == "Z" else f"{zone[:3]}:{zone[3:]}"
    frac = f".{local.microsecond // 1000:03d}" if precision == "ms" else ""
    return f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local:%H:%M:%S}{frac}{zone}"


def next_value(value: str) -> str:
    """The adjacent date/dateTime at the same precision (later, or earlier at the year 9999)."""
    if len(value) == 4:
        y = int(value)
        return f"{y + 1 if y < 9999 else y - 1:04d}"
    if len(value) == 7:
        y, m = int(value[:4]), int(value[5:])
        y, m = (y, m + 1) if m < 12 else ((y + 1, 1) if y < 9999 else (y, m - 1))
        return f"{y:04d}-{m:02d}"
    if len(value) == 10:
        d = dt.date.fromisoformat(value)
        d = d + dt.timedelta(days=1) if d < dt.date(9999, 12, 31) else d - dt.timedelta(days=1)
        return d.isoformat()
    if value[17:19] == "60":
        return value[:17] + "59" + value[19:]  # a leap second: the second before it
    at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    step = dt.timedelta(milliseconds=1) if "." in value else dt.timedelta(seconds=1)
    moved = at + step if at.year < 9999 else at - step  # stays in the value's own zone
    return local_text(moved, "ms" if "." in value else "s")


# The ends of the calendar FHIR allows, leap days, the epoch, a leap second.
_EDGE_DATES = ["0001", "0001-01", "0001-01-01", "9999", "9999-12", "9999-12-31", "2000-02-29", "1900-02-28",
               "1970-01-01", "1969-12-31"]
_EDGE_DATE_TIMES = _EDGE_DATES + ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "2016-12-31T23:59:60Z",
                                  "9999-12-31T23:59:59.999+14:00", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999Z"]


@st.composite
def dates(draw) -> str:
    """A FHIR `date` at year, month or day precision, anywhere in 0001..9999."""
    if draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(_EDGE_DATES))
    at = draw(instants())
    return render(at, draw(st.sampled_from("YMD")), 0)


@st.composite
def date_times(draw, near_now: bool = True) -> str:
    if draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(_EDGE_DATE_TIMES))
    at = draw(instants(near_now=near_now))
    return render(at, draw(st.sampled_from(["Y", "M", "D", "s", "s", "ms", "ms"])), draw(_OFFSETS))


@st.composite
def periods(draw) -> dict:
    """A Period whose end is not before its start, each end at its own precision and zone."""
    start = draw(instants(near_now=True))
    assume(start.year < 9990)
    end = start + dt.timedelta(seconds=draw(st.integers(0, 10**8)))
    out = {"start": render(start, draw(st.sampled_from(["D", "s", "ms"])), draw(_OFFSETS))}
    if draw(st.booleans()):
        out["end"] = render(end, draw(st.sampled_from(["D", "s", "ms"])), draw(_OFFSETS))
    return out


_DECIMALS = st.decimals(min_value=Decimal("-100000"), max_value=Decimal("100000"), places=3, allow_nan=False)


def number(d: Decimal) -> int | float:
    return int(d) if d == d.to_integral_value() else float(d)


def loinc_codes():
    return st.tuples(st.integers(1, 99999), st.integers(0, 9)).map(lambda t: f"{t[0]}-{t[1]}")


def codes(system: str):
    if system == SNOMED:
        return st.integers(10**5, 10**12).map(str)
    return st.tuples(st.sampled_from("ABCDEFGIJKLMNRZ"), st.integers(0, 99), st.integers(0, 9)).map(
        lambda t: f"{t[0]}{t[1]:02d}.{t[2]}"
    )


# -- resources -----------------------------------------------------------------------------


@st.composite
def patients(draw) -> dict:
    names = [{"family": draw(name_part()), "given": draw(st.lists(name_part(), max_size=2))}]
    if draw(st.booleans()):
        names.append({"use": "nickname", "text": draw(name_part())})
    for n in names:
        if not n.get("given"):
            n.pop("given", None)
    ids = draw(st.lists(st.tuples(_SYSTEMS, _ID_TEXT), min_size=1, max_size=2, unique_by=lambda t: t[0]))
    return {
        "resourceType": "Patient",
        "identifier": [{"system": s, "value": v} for s, v in ids],
        "active": draw(st.booleans()),
        "name": names,
        "gender": draw(st.sampled_from(["male", "female", "other", "unknown"])),
        "birthDate": draw(dates()),
    }


@st.composite
def observation_values(draw) -> tuple[str, object]:
    kind = draw(st.sampled_from(["valueQuantity", "valueString", "valueCodeableConcept"]))
    if kind == "valueQuantity":
        unit = draw(st.sampled_from(["mmHg", "kg", "Cel", "/min", "mmol/L", "%", "10*9/L"]))
        return kind, {"value": number(draw(_DECIMALS)), "unit": unit, "system": UCUM, "code": unit}
    if kind == "valueString":
        return kind, draw(st.one_of(name_part(), _ID_TEXT))
    return kind, {"coding": [{"system": SNOMED, "code": draw(codes(SNOMED))}], "text": draw(name_part())}


@st.composite
def observations(draw, subject: str) -> dict:
    kind, value = draw(observation_values())
    effective = ("effectiveDateTime", draw(date_times())) if draw(st.booleans()) else ("effectivePeriod", draw(periods()))
    return {
        "resourceType": "Observation",
        "status": draw(st.sampled_from(["final", "amended", "preliminary", "registered", "corrected"])),
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": draw(st.sampled_from(["vital-signs", "laboratory"]))}]}],
        "code": {"coding": [{"system": LOINC, "code": draw(loinc_codes()), "display": draw(name_part())}]},
        "subject": {"reference": subject},
        effective[0]: effective[1],
        kind: value,
    }


@st.composite
def conditions(draw, subject: str) -> dict:
    system = draw(st.sampled_from([SNOMED, ICD10]))
    return {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": draw(st.sampled_from(["active", "recurrence", "remission", "resolved"]))}]},
        "code": {"coding": [{"system": system, "code": draw(codes(system))}], "text": draw(name_part())},
        "subject": {"reference": subject},
        "onsetDateTime": draw(date_times()),
        "recordedDate": draw(date_times()),
    }


@st.composite
def encounters(draw, subject: str) -> dict:
    period = draw(periods())
    return {
        "resourceType": "Encounter",
        "status": draw(st.sampled_from(["planned", "arrived", "in-progress", "finished", "cancelled"])),
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                  "code": draw(st.sampled_from(["AMB", "EMER", "IMP", "VR", "HH"]))},
        "subject": {"reference": subject},
        "period": period,
    }


@st.composite
def medication_requests(draw, subject: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "status": draw(st.sampled_from(["active", "on-hold", "completed", "stopped", "draft"])),
        "intent": draw(st.sampled_from(["proposal", "plan", "order", "original-order"])),
        "medicationCodeableConcept": {"coding": [{"system": DRUGS, "code": draw(_CODE_TEXT),
                                                  "display": draw(name_part())}]},
        "subject": {"reference": subject},
        "authoredOn": draw(date_times()),
        "dosageInstruction": [{"text": draw(name_part()),
                               "doseAndRate": [{"doseQuantity": {"value": number(abs(draw(_DECIMALS))) or 1,
                                                                 "unit": "mg", "system": UCUM, "code": "mg"}}]}],
    }


CLINICAL = {"Observation": observations, "Condition": conditions, "Encounter": encounters,
            "MedicationRequest": medication_requests}


# -- HTTP helpers --------------------------------------------------------------------------


def esc(value: str) -> str:
    """Escape a search value: https://hl7.org/fhir/R4/search.html#escaping"""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


async def create(client, resource: dict) -> dict:
    r = await client.post(f"{FHIR}/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return r.json()


async def read_back_equal(client, sent: dict, created: dict) -> None:
    r = await client.get(f"{FHIR}/{sent['resourceType']}/{created['id']}")
    assert r.status_code == 200, r.text
    got = {k: v for k, v in r.json().items() if k != "meta"}
    assert got == {**sent, "id": created["id"]}


async def found(client, res_type: str, rid: str, *query: tuple[str, str]) -> bool:
    # strict: a parameter the server does not know is an error, never silently ignored
    r = await client.get(f"{FHIR}/{res_type}", params=[*query, ("_count", "1000"), ("_elements", "id")],
                         headers={"Prefer": "handling=strict"})
    assert r.status_code == 200, (query, r.text)
    body = r.json()
    ids = {e["resource"]["id"] for e in body.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"}
    assert "next" not in {link["relation"] for link in body.get("link", [])}, "raise _count: results were paged"
    return rid in ids


async def finds(client, res_type: str, rid: str, *query: tuple[str, str]) -> None:
    assert await found(client, res_type, rid, *query), f"{res_type}/{rid} not found by {query}"


async def misses(client, res_type: str, rid: str, *query: tuple[str, str]) -> None:
    assert not await found(client, res_type, rid, *query), f"{res_type}/{rid} found by {query}"


async def check_date(client, res_type: str, rid: str, param: str, value) -> None:
    """A dateTime is found by itself (eq at its own precision) and missed by its neighbour;
    a Period by ge its start and le its end, and missed by lt its start and gt its end."""
    if isinstance(value, str):
        await finds(client, res_type, rid, (param, value))
        await finds(client, res_type, rid, (param, "eq" + value))
        await misses(client, res_type, rid, (param, next_value(value)))
        if "T" in value and value[17:19] != "60":
            # the same instant written in another zone
            at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            for offset in (0, -570, 840):
                try:
                    local = at.astimezone(dt.timezone(dt.timedelta(minutes=offset)))
                except OverflowError:
                    continue  # before 0001 or after 9999 in that zone
                await finds(client, res_type, rid, (param, local_text(local, "ms" if "." in value else "s")))
        return
    await finds(client, res_type, rid, (param, "ge" + value["start"]))
    await misses(client, res_type, rid, (param, "lt" + value["start"]))
    if "end" in value:
        await finds(client, res_type, rid, (param, "le" + value["end"]), (param, "ge" + value["start"]))
        await misses(client, res_type, rid, (param, "gt" + value["end"]))
    else:
        await finds(client, res_type, rid, (param, "gt" + value["start"][:4]))  # open end: ongoing


# -- properties ----------------------------------------------------------------------------


@EXAMPLES
@given(patient=patients(), cut=st.integers(1, 40), data=st.data())
async def test_random_patients_round_trip_and_are_found_by_their_own_values(client, patient, cut, data):
    created = await create(client, patient)
    pid = created["id"]
    await read_back_equal(client, patient, created)

    family = patient["name"][0]["family"]
    await finds(client, "Patient", pid, ("name", esc(family[:cut])))
    await finds(client, "Patient", pid, ("family", esc(family)))
    await finds(client, "Patient", pid, ("name:exact", esc(family)))
    await misses(client, "Patient", pid, ("name", esc(family[:cut]) + "7"))
    for given_name in patient["name"][0].get("given", []):
        await finds(client, "Patient", pid, ("given", esc(given_name)))
    if "text" in patient["name"][-1]:
        await finds(client, "Patient", pid, ("name", esc(patient["name"][-1]["text"])))

    own = {(i["system"], i["value"]) for i in patient["identifier"]}
    for ident in patient["identifier"]:
        await finds(client, "Patient", pid, ("identifier", f"{esc(ident['system'])}|{esc(ident['value'])}"))
        await finds(client, "Patient", pid, ("identifier", esc(ident["value"])))
        other = data.draw(_ID_TEXT)
        if (ident["system"], other) not in own:
            await misses(client, "Patient", pid, ("identifier", f"{esc(ident['system'])}|{esc(other)}"))
        await misses(client, "Patient", pid, ("identifier", f"http://not.the.system/{uuid.uuid4()}|{esc(ident['value'])}"))

    await check_date(client, "Patient", pid, "birthdate", patient["birthDate"])
    await finds(client, "Patient", pid, ("gender", patient["gender"]), ("birthdate", patient["birthDate"]))
    await finds(client, "Patient", pid, ("active", str(patient["active"]).lower()), ("gender", patient["gender"]))
    await misses(client, "Patient", pid, ("active", str(not patient["active"]).lower()))
    other_gender = next(g for g in ("male", "female", "other", "unknown") if g != patient["gender"])
    await misses(client, "Patient", pid, ("gender", other_gender), ("birthdate", patient["birthDate"]))


@st.composite
def clinical(draw) -> tuple[dict, dict]:
    """A Patient and one clinical resource about them (subject filled in after creation)."""
    kind = draw(st.sampled_from(sorted(CLINICAL)))
    return draw(patients()), draw(CLINICAL[kind]("Patient/PLACEHOLDER"))


async def check_clinical(client, res: dict, rid: str, pid: str, other_pid: str) -> None:
    rt = res["resourceType"]
    await finds(client, rt, rid, ("subject", f"Patient/{pid}"))
    await finds(client, rt, rid, ("patient", pid))
    await finds(client, rt, rid, ("subject:Patient", pid))
    await misses(client, rt, rid, ("subject", f"Patient/{other_pid}"))
    if rt == "Observation":
        coding = res["code"]["coding"][0]
        await finds(client, rt, rid, ("code", f"{LOINC}|{coding['code']}"))
        await finds(client, rt, rid, ("code", coding["code"]), ("patient", pid))
        await misses(client, rt, rid, ("code", f"{LOINC}|{coding['code']}0"))
        await misses(client, rt, rid, ("code", f"{SNOMED}|{coding['code']}"))
        await check_date(client, rt, rid, "date", res.get("effectiveDateTime") or res.get("effectivePeriod"))
        if "valueQuantity" in res:
            q = res["valueQuantity"]
            value = Decimal(str(q["value"]))
            await finds(client, rt, rid, ("value-quantity", f"{value}|{UCUM}|{esc(q['code'])}"))
            await finds(client, rt, rid, ("value-quantity", str(value)))
            await finds(client, rt, rid, ("value-quantity", f"{value}||{esc(q['unit'])}"))
            await misses(client, rt, rid, ("value-quantity", f"{value + 1}|{UCUM}|{esc(q['code'])}"))
            await misses(client, rt, rid, ("value-quantity", f"{value}|{UCUM}|{esc(q['code'])}x"))
            await finds(client, rt, rid, ("value-quantity", f"gt{value - 1}"), ("value-quantity", f"lt{value + 1}"))
        elif "valueString" in res:
            text = res["valueString"]
            await finds(client, rt, rid, ("value-string", esc(text)))
            await finds(client, rt, rid, ("value-string:exact", esc(text)))
            await finds(client, rt, rid, ("value-string:contains", esc(text[len(text) // 3 : 1 + 2 * len(text) // 3])))
            await misses(client, rt, rid, ("value-string:exact", esc(text[:-1] or "x")))
            if "☃" not in text:
                await misses(client, rt, rid, ("value-string", esc(text) + "☃"))
                await misses(client, rt, rid, ("value-string:contains", "☃" + esc(text[-2:])))
        else:
            coding = res["valueCodeableConcept"]["coding"][0]
            await finds(client, rt, rid, ("value-concept", f"{SNOMED}|{coding['code']}"))
            await misses(client, rt, rid, ("value-concept", f"{SNOMED}|{coding['code']}1"))
    elif rt == "Condition":
        coding = res["code"]["coding"][0]
        await finds(client, rt, rid, ("code", f"{coding['system']}|{esc(coding['code'])}"))
        await misses(client, rt, rid, ("code", f"{coding['system']}|{esc(coding['code'])}9"))
        await finds(client, rt, rid, ("code:text", esc(res["code"]["text"])))
        await check_date(client, rt, rid, "onset-date", res["onsetDateTime"])
        await check_date(client, rt, rid, "recorded-date", res["recordedDate"])
        status = res["clinicalStatus"]["coding"][0]["code"]
        await finds(client, rt, rid, ("clinical-status", status))
        await misses(client, rt, rid, ("clinical-status", "inactive"))
    elif rt == "Encounter":
        await check_date(client, rt, rid, "date", res["period"])
        await finds(client, rt, rid, ("class", res["class"]["code"]), ("status", res["status"]))
        await misses(client, rt, rid, ("class", res["class"]["code"]), ("status", "entered-in-error"))
    else:
        coding = res["medicationCodeableConcept"]["coding"][0]
        await finds(client, rt, rid, ("code", f"{DRUGS}|{esc(coding['code'])}"))
        await misses(client, rt, rid, ("code", f"{DRUGS}|{esc(coding['code'])}#"))
        await check_date(client, rt, rid, "authoredon", res["authoredOn"])
        await finds(client, rt, rid, ("intent", res["intent"]), ("status", res["status"]))
        await misses(client, rt, rid, ("intent", "instance-order"))


@EXAMPLES
@given(pair=clinical())
async def test_random_clinical_resources_round_trip_and_are_found(client, pair):
    patient, res = pair
    pid = (await create(client, patient))["id"]
    other_pid = (await create(client, {"resourceType": "Patient", "gender": "unknown"}))["id"]
    res = {**res, "subject": {"reference": f"Patient/{pid}"}}
    created = await create(client, res)
    await read_back_equal(client, res, created)
    await check_clinical(client, res, created["id"], pid, other_pid)


@st.composite
def transactions(draw) -> tuple[dict, list[dict]]:
    """A Patient and 1-6 clinical resources, all `urn:uuid:` linked, in random order; an
    Observation may also point at an Encounter of the same Bundle."""
    patient = draw(patients())
    patient["identifier"].append({"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"})
    p_url = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": p_url, "resource": patient, "request": {"method": "POST", "url": "Patient"}}]
    if draw(st.booleans()):
        # a client-assigned id (https://hl7.org/fhir/R4/datatypes.html#id), made unique per example
        rid = draw(st.from_regex(r"[A-Za-z0-9\-.]{1,40}", fullmatch=True)) + "-" + uuid.uuid4().hex[:12]
        patient["id"] = rid
        entries[0]["request"] = {"method": "PUT", "url": f"Patient/{rid}"}
    doctor_url = f"urn:uuid:{uuid.uuid4()}"
    doctor = {"resourceType": "Practitioner", "name": [{"family": draw(name_part())}]}
    if draw(st.booleans()):
        patient["generalPractitioner"] = [{"reference": doctor_url}]
    encounter_urls = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(sorted(CLINICAL)))
        res = draw(CLINICAL[kind](p_url))
        url = f"urn:uuid:{uuid.uuid4()}"
        if kind == "Encounter":
            encounter_urls.append(url)
        entries.append({"fullUrl": url, "resource": res, "request": {"method": "POST", "url": kind}})
    for e in entries:
        res = e["resource"]
        if res["resourceType"] == "Observation" and encounter_urls and draw(st.booleans()):
            res["encounter"] = {"reference": draw(st.sampled_from(encounter_urls))}
        if draw(st.booleans()):
            by_doctor = {"reference": doctor_url}
            if res["resourceType"] == "Observation":
                res["performer"] = [by_doctor]
                res["extension"] = [{"url": "http://yiyun.test/StructureDefinition/reviewed-by", "valueReference": by_doctor}]
            elif res["resourceType"] == "Condition":
                res["asserter"] = by_doctor
            elif res["resourceType"] == "Encounter":
                res["participant"] = [{"individual": by_doctor}]
            elif res["resourceType"] == "MedicationRequest":
                res["requester"] = by_doctor
    if doctor_url in str(entries):
        entries.append({"fullUrl": doctor_url, "resource": doctor, "request": {"method": "POST", "url": "Practitioner"}})
    order = draw(st.permutations(range(len(entries))))
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entries[i] for i in order]}, entries


# Where a clinical resource names the practitioner, and the search parameter for it.
BY_DOCTOR = {"Observation": ("performer", "performer"), "Condition": ("asserter", "asserter"),
             "Encounter": ("participant", "practitioner"), "MedicationRequest": ("requester", "requester"),
             "Patient": ("generalPractitioner", "general-practitioner")}


@EXAMPLES
@given(tx=transactions(), break_one=st.booleans(), rnd=st.randoms(use_true_random=False))
async def test_random_transactions_load_atomically_and_resolve_references(client, tx, break_one, rnd: random.Random):
    bundle, entries = tx
    patient = entries[0]["resource"]
    marker = patient["identifier"][-1]
    by_marker = ("identifier", f"{marker['system']}|{marker['value']}")
    if break_one:
        victim = rnd.choice(bundle["entry"])
        victim["resource"] = {**victim["resource"], "status": "not-a-status"}
        r = await client.post(FHIR, json=bundle)
        assert r.status_code in (400, 422), r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        r = await client.get(f"{FHIR}/Patient", params=[by_marker])
        assert r.status_code == 200 and r.json().get("total", len(r.json().get("entry", []))) == 0
        return

    r = await client.post(FHIR, json=bundle)
    assert r.status_code == 200, r.text
    response = r.json()
    assert response["type"] == "transaction-response"
    locations = {}
    for sent, got in zip(bundle["entry"], response["entry"]):
        assert got["response"]["status"].startswith("201"), got
        rtype, rid = got["response"]["location"].split("/")[:2]
        assert rtype == sent["resource"]["resourceType"]
        locations[sent["fullUrl"]] = f"{rtype}/{rid}"
    pid = locations[entries[0]["fullUrl"]].split("/")[1]
    await finds(client, "Patient", pid, by_marker)

    for e in entries:
        ref = locations[e["fullUrl"]]
        rtype, rid = ref.split("/")
        stored = (await client.get(f"{FHIR}/{ref}")).json()
        # every urn:uuid reference, wherever it sits, now names what the Bundle created
        expected = {**resolved(e["resource"], locations), "id": rid}
        assert {k: v for k, v in stored.items() if k != "meta"} == expected
        if rtype not in ("Patient", "Practitioner"):
            await finds(client, rtype, rid, ("patient", pid))
        if "encounter" in e["resource"]:
            await finds(client, rtype, rid, ("encounter", expected["encounter"]["reference"]))
        element, param = BY_DOCTOR.get(rtype, (None, None))
        if element in e["resource"]:
            doctor = next(v for v in locations.values() if v.startswith("Practitioner/"))
            await finds(client, rtype, rid, (param, doctor))
    # everything about the patient, found again from the patient
    r = await client.get(f"{FHIR}/Patient", params=[("_id", pid), ("_revinclude", "Observation:subject"),
                                                    ("_revinclude", "Condition:subject"), ("_revinclude", "Encounter:subject"),
                                                    ("_revinclude", "MedicationRequest:subject"), ("_count", "1000")])
    assert r.status_code == 200, r.text
    got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json().get("entry", [])}
    assert got == {v for v in locations.values() if not v.startswith("Practitioner/")}


def resolved(value, locations: dict[str, str]):
    """`value` with each Bundle-local `urn:uuid:` reference replaced by where it was created."""
    if isinstance(value, dict):
        return {k: (locations.get(v, v) if k == "reference" else resolved(v, locations)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved(v, locations) for v in value]
    return value


async def test_the_first_and_last_years_of_the_calendar(client):
    """FHIR dates run from 0001 to 9999 (https://hl7.org/fhir/R4/datatypes.html#date); a date
    at year precision is the whole year, the last one included."""
    for year in ("0001", "9999"):
        patient = {"resourceType": "Patient", "birthDate": year}
        created = await create(client, patient)
        await read_back_equal(client, patient, created)
        await finds(client, "Patient", created["id"], ("birthdate", year))
        await finds(client, "Patient", created["id"], ("birthdate", f"ge{year}-06"))
        await misses(client, "Patient", created["id"], ("birthdate", next_value(year)))
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "effectiveDateTime": year}
        created = await create(client, obs)
        await finds(client, "Observation", created["id"], ("date", f"sa{next_value(year)}" if year == "9999" else year))
