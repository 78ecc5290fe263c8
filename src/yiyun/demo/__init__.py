"""Reproducible synthetic data for demonstrations: one region's health services in FHIR R4.

    from yiyun.demo import generate_demo
    data = generate_demo()            # seed 20240601
    for tenant_slug, resource in data.resources: ...

The region is 长沙市 (湖南省): three hospitals, a community health service centre, a
pharmacy and the municipal CDC, each a tenant; 20 departments, 60 staff, 2,000 patients
with two years of encounters, diagnoses (ICD-10 national clinical edition 2.0),
observations (LOINC, UCUM) and prescriptions. Everything is drawn from
``random.Random`` streams derived from the seed and dated relative to
:data:`REFERENCE_DATE`, so the same seed always gives byte-identical output.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from yiyun.demo.catalogue import FACILITIES, REFERENCE_DATE, check_catalogue

__all__ = ["DemoTenant", "DemoData", "generate_demo", "REFERENCE_DATE", "DEFAULT_SEED", "PATIENT_COUNT"]

DEFAULT_SEED = 20240601
PATIENT_COUNT = 2000

# Resources are listed type by type so that, loaded in order, most references point
# backwards (Encounter ↔ Condition refer to each other and cannot both).
_TYPE_ORDER = (
    "Organization", "Location", "HealthcareService", "Practitioner", "PractitionerRole", "Patient",
    "Encounter", "Condition", "Observation", "MedicationRequest",
)


@dataclass
class DemoTenant:
    slug: str
    name: str
    kind: str  # "hospital" | "clinic" | "pharmacy" | "cdc"
    organization_id: str


@dataclass
class DemoData:
    tenants: list[DemoTenant]
    resources: list[tuple[str, dict]]  # (tenant slug, FHIR R4 resource with a client-assigned id)
    seed: int = DEFAULT_SEED
    reference_date: date = field(default=REFERENCE_DATE)

    def counts(self) -> dict[str, int]:
        """Number of resources per resource type."""
        return dict(Counter(r["resourceType"] for _, r in self.resources))

    def for_tenant(self, slug: str) -> list[dict]:
        return [r for s, r in self.resources if s == slug]


class _Sink:
    def __init__(self) -> None:
        self.by_type: dict[str, list[tuple[str, dict]]] = {t: [] for t in _TYPE_ORDER}

    def emit(self, slug: str, resource: dict) -> None:
        self.by_type[resource["resourceType"]].append((slug, resource))

    def ordered(self) -> list[tuple[str, dict]]:
        return [item for t in _TYPE_ORDER for item in self.by_type[t]]


def generate_demo(seed: int = DEFAULT_SEED, *, patients: int = PATIENT_COUNT) -> DemoData:
    """Build the demo data set for `seed`; pure, deterministic, about 30 000 resources."""
    from yiyun.demo.clinical import CareBuilder
    from yiyun.demo.facilities import FacilityBuilder
    from yiyun.demo.people import PeopleBuilder

    check_catalogue()
    sink = _Sink()
    sites = FacilityBuilder(random.Random(f"{seed}:facilities"), sink.emit).build()
    people = PeopleBuilder(random.Random(f"{seed}:people"), sites, sink.emit).build(patients)
    care = CareBuilder(seed, sink.emit)
    for person in people:
        care.build(person)
    tenants = [DemoTenant(f.slug, f.name, f.kind, site.org_id) for f, site in zip(FACILITIES, sites)]
    return DemoData(tenants=tenants, resources=sink.ordered(), seed=seed)
