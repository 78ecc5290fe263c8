"""Who may start an online consultation: the real-name rule and the under-6 rule.

- Real name: patients of internet diagnosis and treatment are identified by their real
  name (《互联网诊疗管理办法（试行）》2018 第十八条 and 《互联网诊疗监管细则（试行）》2022
  第十五条, as cited by `yiyun.identity.verification`). A patient whose account has not passed real-name verification
  (`yiyun.identity.verification`) is refused with code `real-name-required` and sent to
  `/me/real-name`. It is the account acting that must be verified: a guardian who starts
  a consultation for their ward (`wards`) from their own account is identified by their
  own real name (监护人实名), the ward's record being the consultation's patient.
- Children under 6: online care for a child under six needs the child's guardian and a
  qualified doctor with the child (《互联网诊疗管理办法（试行）》2018 第十七条: 确认患儿有
  监护人和相关专业医师陪伴). The guardian confirms on the pre-consultation form that they
  accompany the child; the confirmation is stored in the form (QuestionnaireResponse item
  `guardian-accompanies`) and the doctor's view flags the consultation.
"""

from __future__ import annotations

from datetime import date

from yiyun.core.errors import Forbidden, Unprocessable
from yiyun.hospital.codes import age_in_years, latest_birth_date, today_local

CHILD_AGE_YEARS = 6
REAL_NAME_PAGE = "/me/real-name"
CHILD_FLAG = "6岁以下儿童 — 监护人陪同"


class RealNameRequired(Forbidden):
    code = "real-name-required"


class GuardianRequired(Unprocessable):
    code = "guardian-required"


async def is_verified(conn, tenant: str, patient_id: str | None, account: str | None = None) -> bool:
    """The signed-in account when it is known (a web session), else the account linked to
    Patient/`patient_id` in `tenant` (a token names the patient)."""
    from yiyun.identity.verification import is_patient_real_name_verified, is_real_name_verified

    if account:
        return await is_real_name_verified(conn, account)
    return bool(patient_id) and await is_patient_real_name_verified(conn, tenant, patient_id)


async def require_real_name(conn, tenant: str, patient_id: str, *, account: str | None = None) -> None:
    """403 `real-name-required` unless the patient is verified by real name (`is_verified`)."""
    if not await is_verified(conn, tenant, patient_id, account):
        raise RealNameRequired(
            f"请先完成实名认证再发起问诊：互联网诊疗须实名就医，请前往 {REAL_NAME_PAGE} 认证 "
            f"(real-name verification is required before an online consultation: verify at {REAL_NAME_PAGE})")


def is_young_child(patient: dict | None, on: date | None = None) -> bool:
    """Whether the patient is under six on `on` (today in China), by Patient.birthDate."""
    born = latest_birth_date((patient or {}).get("birthDate"))
    if born is None:
        return False
    return age_in_years(born, on or today_local()) < CHILD_AGE_YEARS


def require_guardian(patient: dict | None, guardian_accompanies: bool) -> bool:
    """422 `guardian-required` for a child under six without the guardian's confirmation;
    returns whether the patient is such a child."""
    child = is_young_child(patient)
    if child and not guardian_accompanies:
        raise GuardianRequired(
            "6岁以下儿童问诊须由监护人全程陪同，请勾选“我是监护人，全程陪同患儿问诊” "
            "(a child under 6 consults only with the guardian present: confirm that you accompany the child)",
            expression=["form.guardian_accompanies"])
    return child
