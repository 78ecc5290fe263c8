"""Security events raised by abuse signals (migration 0009_security_events).

Detectors read the audit log (`audit_log`), so they see every module's entries; what they
find is kept here for privacy officers and administrators to acknowledge and close.
Times are integer microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

security_event = Table(
    "security_event",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("kind", String(32), nullable=False),  # failed-signins | many-patients | break-glass | after-hours
    Column("severity", String(16), nullable=False),  # low | medium | high
    Column("subject", String(256), nullable=False),  # the actor, or "address:<client address>"
    Column("detail", Text, nullable=True),  # small JSON object
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_seq", BigInteger, nullable=False),  # audit entries that raised it
    Column("last_seq", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open | acknowledged | closed
    Column("acknowledged_by", String(256), nullable=True),
    Column("acknowledged_ts", BigInteger, nullable=True),
    Index("ix_security_event_list", "tenant", "status", "last_seen"),
    Index("ix_security_event_dedupe", "tenant", "kind", "subject", "last_seen"),
)

# How far each tenant's audit chain has been scanned, and where the detection window starts.
security_scan_state = Table(
    "security_scan_state",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("window_seq", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
)

# Per-tenant detector settings (thresholds, working hours), a JSON object over the defaults.
security_policy = Table(
    "security_policy",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("updated_by", String(256), nullable=True),
    Column("updated_ts", BigInteger, nullable=False),
)

# Per privacy officer and tenant (migration 0016_consent): when the last alert SMS went out
# (at most one per 15 minutes, `security_alerts.SMS_INTERVAL_MINUTES`) and how far they have
# read the events page (events whose first audit entry is past `seen_seq` are unread).
security_alert_recipient = Table(
    "security_alert_recipient",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("account_id", String(36), primary_key=True),
    Column("last_sms_ts", BigInteger, nullable=True),
    Column("seen_seq", BigInteger, nullable=True),
)
