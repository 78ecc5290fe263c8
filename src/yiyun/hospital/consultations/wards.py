"""Consultations for a ward: a guardian starts and follows them from their own account.

A parent consults for a child, an adult child for an elderly parent they are the registered
guardian of. The consultation's patient is the ward (Encounter.subject); the guardian is
recorded as the one who started it (`consult_session.started_by`, and the form's
QuestionnaireResponse.author/source) and takes part in the chat on the patient's side.

Who is a guardian is what staff registered, under either of the platform's two records,
each ending when a minor ward turns 18 unless the guardianship is of an adult without full
capacity (《民法典》第十七条、第十八条、第二十八条):

- booking's: a RelatedPerson of the ward with the extension `…/guardian-patient` naming
  the guardian's own Patient (`yiyun.hospital.booking.may_act_for`);
- the access policy's: the guardian's `Patient.link` to a RelatedPerson of the ward with a
  parent or guardian relationship (`yiyun.identity.care.wards`): the family members that
  /patient/me lists, and the ones the consultation form offers.

Anyone else's consultations are not found (404), as for any consultation not one's own;
starting one for a patient who is not one's ward is refused (403 `not-guardian`).
"""

from __future__ import annotations

from yiyun.core.errors import Forbidden
from yiyun.hospital import booking


class NotGuardian(Forbidden):
    code = "not-guardian"


def _actor(party) -> booking.Actor:
    return booking.Actor("patient", party.subject, party.id, ("patient",))


async def listed_wards(work) -> frozenset[str]:
    """The party's wards by `Patient.link` (as /patient/me lists them), once per unit of work."""
    from yiyun.identity.care import wards

    if work.party.role != "patient":
        return frozenset()
    if work._wards is None:
        rows = await work.conn.execute(wards(work.party.tenant, work.party.id).select())
        work._wards = frozenset(r.patient for r in rows if r.patient and r.patient != work.party.id)
    return work._wards


async def may_consult_for(work, patient_id: str | None) -> bool:
    """Whether the calling patient is `patient_id` or, today, their guardian."""
    party = work.party
    if party.role != "patient" or not patient_id:
        return False
    if patient_id == party.id:
        return True
    known = work._acts_for.get(patient_id)
    if known is None:
        known = patient_id in await listed_wards(work) or await booking.may_act_for(work.repo, _actor(party), patient_id)
        work._acts_for[patient_id] = known
    return known


async def require_guardian_of(work, patient_id: str) -> None:
    """403 `not-guardian` unless the caller may consult for `patient_id` (whether or not
    that patient exists: the answer reveals nothing about other people's records)."""
    if not await may_consult_for(work, patient_id):
        raise NotGuardian("只能为本人或您登记监护的家人发起问诊 "
                          "(you may start a consultation only for yourself or a family member you are the guardian of)")


async def consult_for_choices(work) -> list[dict]:
    """Whom the caller may start a consultation for, themselves first, then the wards
    /patient/me lists: {patient, id, name, birth_date, child_under_6, self}."""
    from yiyun.hospital.consultations import admission
    from yiyun.hospital.consultations.service import display_name, fetch_many

    me = work.party.id
    ids = [me, *sorted(await listed_wards(work))]
    found = await fetch_many(work.repo, [("Patient", i) for i in ids])
    out = []
    for pid in ids:
        stored = found.get(("Patient", pid))
        if stored is None or stored.deleted:
            continue
        out.append({"patient": f"Patient/{pid}", "id": pid, "name": display_name(stored.resource),
                    "birth_date": stored.resource.get("birthDate"),
                    "child_under_6": admission.is_young_child(stored.resource), "self": pid == me})
    return out


async def booked_for_young_child(work, appointment_id: str) -> bool:
    """Whether a booking the caller may consult for is their ward's who is under 6: the form
    of a booking's consultation then asks for the guardian's confirmation (`admission`)."""
    from yiyun.hospital.consultations import admission
    from yiyun.hospital.consultations.service import _appointment_patient, fetch_many

    stored = (await fetch_many(work.repo, [("Appointment", appointment_id)])).get(("Appointment", appointment_id))
    booked_for = _appointment_patient(stored.resource) if stored is not None and not stored.deleted else None
    ward = booked_for.split("/", 1)[1] if booked_for else None
    if not ward or ward == work.party.id or not await may_consult_for(work, ward):
        return False
    patient = (await fetch_many(work.repo, [("Patient", ward)])).get(("Patient", ward))
    return patient is not None and not patient.deleted and admission.is_young_child(patient.resource)
