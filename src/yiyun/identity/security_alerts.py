"""High-severity security events reach the tenant's privacy officers without polling.

When a scan (`yiyun.identity.security_events.scan`) raises an event of a kind the tenant's
security policy alerts on (`alerts.kinds`; by default the high-severity break-glass and
second-factor reset, and many-patients, i.e. suspicious access) and its transaction has
committed:

- a message is published on the tenant's real-time channel `security-alerts:<tenant>`
  (`yiyun.core.realtime`); privacy officers' pages listen on `/ws/security-alerts` and show
  a badge and a toast. Delivery is at most once: the event itself is already stored, and the
  events page counts what the officer has not yet seen (`unread_count`);
- each active privacy officer of the tenant with a mobile number on file gets an SMS through
  the configured provider (`yiyun.identity.sms`), at most one per officer every 15 minutes.

《医疗卫生机构网络安全管理办法》(国卫规划发〔2022〕29号) 第二十六条 and GB/T 22239-2019 8.1.4.4
ask that abnormal access be detected *and* handled promptly; an event nobody sees until
they next open the page is not handled promptly.
"""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from yiyun.core.db import unit_of_work
from yiyun.core.logging import get_logger
from yiyun.fhir.model import now_us
from yiyun.identity.security_tables import security_alert_recipient, security_event, security_scan_state

log = get_logger("yiyun.security")

OFFICER_ROLE = "privacy-officer"
ALERT_SEVERITIES = frozenset({"high"})
# Alert fatigue: an officer paged by every event of a burst (a break-glass per patient in a
# mass-casualty night) learns to ignore the pager. One SMS per 15 minutes says "look at the
# events page"; the page and the live badge carry every event, so nothing is lost.
SMS_INTERVAL_MINUTES = 15
_MINUTE_US = 60_000_000
# What the SMS calls each kind. The SMS names no patient, account or address: a text message
# is not a protected channel (《个人信息保护法》第五十一条: measures proportionate to the risk).
SMS_KIND_NAMES = {"break-glass": "紧急调阅病历", "second-factor-reset": "管理员重置两步验证",
                  "many-patients": "短时间内调阅大量患者", "failed-signins": "多次登录失败", "after-hours": "非工作时间访问"}


def channel(tenant: str) -> str:
    return f"security-alerts:{tenant}"


def alerting(events: list[dict], kinds: list[str] | None = None) -> list[dict]:
    """The events that page someone: those of the tenant's `alerts.kinds` (security policy),
    or, without one, the high-severity ones."""
    if kinds is None:
        return [e for e in events if e.get("severity") in ALERT_SEVERITIES]
    return [e for e in events if e.get("kind") in kinds]


async def notify(engine: AsyncEngine, tenant: str, events: list[dict], kinds: list[str] | None = None) -> int:
    """Publish and text the tenant's privacy officers about `events` (already committed);
    returns the number of SMS sent. Never raises: the events are stored whatever happens here."""
    events = alerting(events, kinds)
    if not events:
        return 0
    await publish(tenant, events)
    try:
        return await text_officers(engine, tenant, events)
    except Exception:  # the SMS gateway or database is away: the page still shows the events
        log.exception("security_alert_sms_failed", tenant=tenant)
        return 0


async def publish(tenant: str, events: list[dict]) -> None:
    from yiyun.core.realtime import get_broker

    message = {"type": "security-events", "tenant": tenant,
               "events": [{"id": e["id"], "kind": e["kind"], "severity": e["severity"]} for e in events]}
    try:
        await get_broker().publish(channel(tenant), message)
    except Exception:  # Redis is away: the unread count on the page still shows them
        log.exception("security_alert_publish_failed", tenant=tenant)


# ------------------------------------------------------------------ SMS
async def privacy_officers(conn: AsyncConnection, tenant: str) -> list[str]:
    """Account ids of the tenant's active privacy officers."""
    from yiyun.identity.tables import account, membership

    rows = (await conn.execute(
        select(membership.c.account_id, membership.c.roles).join(account, account.c.id == membership.c.account_id)
        .where(membership.c.tenant == tenant, account.c.status == "active", account.c.kind == "staff")
    )).all()
    return sorted(r.account_id for r in rows if OFFICER_ROLE in r.roles.split(","))


async def _ensure_row(conn: AsyncConnection, tenant: str, account_id: str) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    await conn.execute(insert(security_alert_recipient).values(tenant=tenant, account_id=account_id)
                       .on_conflict_do_nothing(index_elements=["tenant", "account_id"]))


async def claim_sms(conn: AsyncConnection, tenant: str, account_id: str, now: int | None = None) -> bool:
    """Take the officer's SMS turn: True (and the turn is used) unless one went out in the last
    15 minutes. One conditional UPDATE, so two scanning processes never both send."""
    now = now if now is not None else now_us()
    await _ensure_row(conn, tenant, account_id)
    col = security_alert_recipient.c
    done = await conn.execute(update(security_alert_recipient).where(
        col.tenant == tenant, col.account_id == account_id,
        or_(col.last_sms_ts.is_(None), col.last_sms_ts <= now - SMS_INTERVAL_MINUTES * _MINUTE_US),
    ).values(last_sms_ts=now))
    return done.rowcount == 1


def sms_body(tenant_name: str, events: list[dict]) -> str:
    kinds = "、".join(dict.fromkeys(SMS_KIND_NAMES.get(e["kind"], e["kind"]) for e in events))
    return f"【医云】{tenant_name}安全告警：{len(events)} 起需要处理的安全事件（{kinds}），请尽快登录医云查看“安全事件”并处理。"


async def text_officers(engine: AsyncEngine, tenant: str, events: list[dict]) -> int:
    from yiyun.identity import sms
    from yiyun.identity.accounts import account_phone, get_tenant

    async with unit_of_work(engine, write=False) as conn:
        officers = await privacy_officers(conn, tenant)
        tenant_name = (await get_tenant(conn, tenant)).name
    sent = 0
    body = sms_body(tenant_name, events)
    for account_id in officers:
        # one transaction per officer: a failed send undoes only that officer's turn
        async with unit_of_work(engine, write=True) as conn:
            number = await account_phone(conn, account_id)
            if not number or not await claim_sms(conn, tenant, account_id):
                continue
            await sms.provider().send(conn, number, body)
            sent += 1
    log.info("security_alert_sms", tenant=tenant, officers=len(officers), sent=sent)
    return sent


# ------------------------------------------------------------------ unread
async def unread_count(conn: AsyncConnection, tenant: str, account_id: str) -> int:
    """Open events raised since the officer last opened the events page."""
    seen = (await conn.execute(select(security_alert_recipient.c.seen_seq).where(
        security_alert_recipient.c.tenant == tenant, security_alert_recipient.c.account_id == account_id))).scalar()
    conds = [security_event.c.tenant == tenant, security_event.c.status == "open"]
    if seen is not None:
        conds.append(security_event.c.first_seq > seen)
    return int((await conn.execute(select(func.count()).select_from(security_event).where(and_(*conds)))).scalar())


async def mark_seen(conn: AsyncConnection, tenant: str, account_id: str) -> None:
    """Everything scanned so far counts as seen by the officer (events raised later carry a
    later audit seq: a scan raises events only from entries past its last position)."""
    scanned = (await conn.execute(select(security_scan_state.c.last_seq).where(
        security_scan_state.c.tenant == tenant))).scalar() or 0
    await _ensure_row(conn, tenant, account_id)
    await conn.execute(update(security_alert_recipient).where(
        security_alert_recipient.c.tenant == tenant, security_alert_recipient.c.account_id == account_id,
    ).values(seen_seq=scanned))
