"""Hospital tables for what is not clinical: booking rules, booking blocks, queue numbers,
schedule templates and exceptions, reminders (migration 0010_hospital), the waitlist (0013_admin). Clinical facts
(Schedule, Slot, Appointment …) are FHIR resources; these rows are configuration and
bookkeeping around them. Only `yiyun.hospital` reads and writes them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table

metadata = MetaData()

# One row per tenant (hospital); a tenant without a row uses `booking.DEFAULT_RULES`.
booking_rule = Table(
    "hospital_booking_rule",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("cancel_cutoff_minutes", Integer, nullable=False),
    Column("booking_window_days", Integer, nullable=False),
    Column("max_active_per_day", Integer, nullable=False),
    Column("max_active_per_department_day", Integer, nullable=False),
    Column("noshow_threshold", Integer, nullable=False),
    Column("noshow_window_days", Integer, nullable=False),
    Column("block_days", Integer, nullable=False),
    # added by 0014_jobs: a booked visit not started this long after its end is a no-show
    Column("noshow_grace_minutes", Integer, nullable=False, server_default="30"),
    Column("updated_ts", BigInteger, nullable=False),
)

# A patient temporarily barred from booking (after repeated no-shows).
booking_block = Table(
    "hospital_booking_block",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("patient", String(64), primary_key=True),
    Column("blocked_until", BigInteger, nullable=False),
    Column("reason", String(300), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

# Queue numbers (就诊序号): per schedule and local day, sequential in booking order. The key
# makes a number impossible to hand out twice; numbers of cancelled bookings are not reused.
queue_number = Table(
    "hospital_queue_number",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("schedule", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("appointment", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

# Recurring sessions of a Schedule: on `weekdays` (ISO 1=Mon … 7=Sun, comma-separated),
# from `start_time` to `end_time` (China Standard Time, "HH:MM"), one Slot per `slot_minutes`.
schedule_template = Table(
    "hospital_schedule_template",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("schedule", String(64), nullable=False),
    Column("weekdays", String(20), nullable=False),
    Column("start_time", String(5), nullable=False),
    Column("end_time", String(5), nullable=False),
    Column("slot_minutes", Integer, nullable=False),
    Column("valid_from", String(10), nullable=True),
    Column("valid_to", String(10), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Index("ix_hospital_schedule_template_schedule", "tenant", "schedule"),
)

# Exceptions to the templates: `leave` (a doctor away: target PractitionerRole/<id>),
# `closed` (a schedule or, with target "*", the whole hospital), `extra` (an added session
# of a Schedule with its own slot length). Times are UTC epoch microseconds.
schedule_exception = Table(
    "hospital_schedule_exception",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("target", String(130), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("start_us", BigInteger, nullable=False),
    Column("end_us", BigInteger, nullable=False),
    Column("slot_minutes", Integer, nullable=True),
    Column("reason", String(200), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Index("ix_hospital_schedule_exception_target", "tenant", "target"),
)

# Reminders due before a booked appointment, delivered by `yiyun.hospital.tasks`. `sent_us`
# is set once a reminder is done with (`outcome`: sent, or why not: late, inactive,
# no-phone, failed after `attempts` tries); a row with `sent_us` null is still to send.
reminder = Table(
    "hospital_reminder",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("appointment", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("due_us", BigInteger, nullable=False),
    Column("sent_us", BigInteger, nullable=True),
    Column("outcome", String(16), nullable=True),  # added by 0014_jobs, as are the two below
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(200), nullable=True),
    Index("ix_hospital_reminder_due", "due_us"),
)

# Waitlist (候补挂号) for a full day of one Schedule (a doctor's consultation type): entries
# are served in `id` order when a Slot of that `day` (local date) frees. `status`: waiting |
# booked (then `appointment`) | left | expired; `note` keeps why the last attempt failed.
# Migration 0013_admin.
waitlist = Table(
    "hospital_waitlist",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("schedule", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    Column("patient", String(64), nullable=False),
    Column("status", String(10), nullable=False),
    Column("appointment", String(64), nullable=True),
    Column("note", String(300), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Index("ix_hospital_waitlist_day", "tenant", "schedule", "day", "status"),
    Index("ix_hospital_waitlist_patient", "tenant", "patient", "status"),
)
