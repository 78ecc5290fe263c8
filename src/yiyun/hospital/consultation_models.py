"""Online-consultation tables for what is not clinical: queue state, message sequence,
read receipts, uploads and calls (migration 0011_consultation); patients' ratings of
ended consultations (migration 0012_consult); the guardian who started a ward's
consultation (migration 0015_ward).

The clinical facts are FHIR resources: the consultation is an Encounter, each chat
message a Communication, the pre-consultation form a QuestionnaireResponse, the visit
record Condition + ClinicalImpression. These tables only index them for the queue and
for ordered, replayable delivery; they hold no message text.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, UniqueConstraint

metadata = MetaData()

# One row per consultation: its place in the queue and its sequence counter.
consult_session = Table(
    "consult_session",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),  # the Encounter's id
    Column("patient_id", String(64), nullable=False),
    Column("doctor_id", String(64), nullable=True),  # Practitioner id; null while waiting for "first available"
    Column("department", String(130), nullable=True),  # Organization/… or HealthcareService/…
    Column("mode", String(8), nullable=False),  # text | video
    Column("state", String(12), nullable=False),  # waiting | active | ended | cancelled
    Column("appointment_id", String(64), nullable=True),
    Column("form_id", String(64), nullable=True),  # QuestionnaireResponse id
    Column("record_id", String(64), nullable=True),  # ClinicalImpression id of the visit record
    Column("created_us", BigInteger, nullable=False),
    Column("accepted_us", BigInteger, nullable=True),
    Column("ended_us", BigInteger, nullable=True),
    Column("last_seq", Integer, nullable=False, default=0),
    Column("patient_read_seq", Integer, nullable=False, default=0),
    Column("doctor_read_seq", Integer, nullable=False, default=0),
    # Patient id of the guardian who started the consultation for their ward; null when the
    # patient started it themselves
    Column("started_by", String(64), nullable=True),
    Index("ix_consult_session_queue", "tenant", "state", "created_us"),
    Index("ix_consult_session_patient", "tenant", "patient_id"),
    Index("ix_consult_session_doctor", "tenant", "doctor_id", "state"),
    # the consultation of a booking, looked up when the booking changes status
    Index("ix_consult_session_appointment", "tenant", "appointment_id"),
    # a guardian's list: the consultations they started for their wards
    Index("ix_consult_session_started_by", "tenant", "started_by"),
)

# The conversation's order: sequence number → the Communication that holds the message.
consult_message = Table(
    "consult_message",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("consultation_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("communication_id", String(64), nullable=False),
    Column("sender_role", String(8), nullable=False),  # patient | doctor | system
    Column("kind", String(8), nullable=False),  # text | image | note | call
    Column("client_id", String(64), nullable=True),  # the sender's idempotency key
    Column("sent_us", BigInteger, nullable=False),
    UniqueConstraint("tenant", "consultation_id", "client_id", name="uq_consult_message_client"),
)

# Uploaded images: where the bytes are stored and what they are.
consult_upload = Table(
    "consult_upload",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), nullable=False),
    Column("uploader", String(130), nullable=False),
    Column("storage_key", String(300), nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Index("ix_consult_upload_consultation", "tenant", "consultation_id"),
)

# Video calls of a consultation (WebRTC signalled through the consultation's channel).
consult_call = Table(
    "consult_call",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("id", String(32), primary_key=True),
    Column("consultation_id", String(64), nullable=False),
    Column("started_by", String(8), nullable=False),  # patient | doctor
    Column("started_us", BigInteger, nullable=False),
    Column("connected_us", BigInteger, nullable=True),
    Column("ended_us", BigInteger, nullable=True),
    Column("ended_by", String(8), nullable=True),
    Index("ix_consult_call_consultation", "tenant", "consultation_id"),
)

# A patient's rating of an ended consultation: one per consultation, by its own patient.
# Not clinical (a satisfaction score), so an ordinary table; the doctor is the one who held
# the consultation when it ended, so a doctor's average needs no join.
consult_rating = Table(
    "consult_rating",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("consultation_id", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("practitioner_id", String(64), nullable=False),
    Column("stars", Integer, nullable=False),  # 1..5
    Column("comment", String(200), nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Index("ix_consult_rating_practitioner", "tenant", "practitioner_id"),
)
