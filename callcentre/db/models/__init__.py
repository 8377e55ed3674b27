"""All models, imported here so ``Base.metadata`` knows every table (Alembic reads it)."""

from callcentre.db.models.agents import Agent, AgentSkill, Skill
from callcentre.db.models.audit import AuditEntry
from callcentre.db.models.calls import Call, CallContextItem, CallSegment
from callcentre.db.models.console import ConsoleSession
from callcentre.db.models.customers import Customer, CustomerPhone
from callcentre.db.models.media import Recording, Transcript
from callcentre.db.models.queues import Disposition, Queue
from callcentre.db.models.routing import AgentOfferStreak, QueueEntry, Reservation, TransferRecord
from callcentre.db.models.satisfaction import CallbackTask, SupervisorAlert
from callcentre.db.models.surveys import SurveyResponse
from callcentre.db.models.telephony_state import BackendCall, WebhookResponse
from callcentre.db.models.transcription import TranscriptionJob
from callcentre.db.models.webrtc import WebRtcLegQuality

__all__ = [
    "Agent",
    "AgentOfferStreak",
    "AgentSkill",
    "AuditEntry",
    "BackendCall",
    "Call",
    "CallContextItem",
    "CallSegment",
    "CallbackTask",
    "ConsoleSession",
    "Customer",
    "CustomerPhone",
    "Disposition",
    "Queue",
    "QueueEntry",
    "Recording",
    "Reservation",
    "Skill",
    "SupervisorAlert",
    "SurveyResponse",
    "Transcript",
    "TranscriptionJob",
    "TransferRecord",
    "WebRtcLegQuality",
    "WebhookResponse",
]
