"""Rows and audio the recordings tests share: a call with customer and agents, WAV files."""

from __future__ import annotations

import math
import struct
import subprocess
import wave
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from callcentre.db.base import utcnow
from callcentre.db.models import Agent, Call, CallSegment, Customer, CustomerPhone
from callcentre.domain.ids import new_call_id


@dataclass
class CallRows:
    call: Call
    customer: Customer
    agent: Agent
    other_agent: Agent
    supervisor: Agent


def make_agent(session: Session, login: str, role: str = "agent") -> Agent:
    agent = Agent(login=login, name=login.title(), password_hash="x", role=role)
    session.add(agent)
    session.flush()
    return agent


def make_call(session: Session, *, reason: str = "billing", note: str = "", suffix: str = "",
              arrived_at: datetime | None = None, call_id: str | None = None) -> CallRows:
    """A call answered by ``agent`` for ``customer`` (rows as the IVR service and dispatcher leave them)."""
    customer = Customer(name="Kim " + suffix, account_number="ACC" + (suffix or new_call_id()[-8:]))
    customer.phones.append(CustomerPhone(number="+8210" + (suffix or new_call_id()[-8:])))
    session.add(customer)
    agent = make_agent(session, "agent" + (suffix or new_call_id()[-6:]))
    other = make_agent(session, "other" + (suffix or new_call_id()[-6:]))
    supervisor = make_agent(session, "super" + (suffix or new_call_id()[-6:]), role="supervisor")
    call = Call(id=call_id or new_call_id(), caller_id="+8210", customer_id=customer.id, reason=reason,
                wrap_up_note=note, arrived_at=arrived_at or utcnow())
    session.add(call)
    session.flush()
    call.customer_id = customer.id
    session.add(CallSegment(call_id=call.id, agent_id=agent.id, started_at=utcnow()))
    session.flush()
    return CallRows(call, customer, agent, other, supervisor)


def tone_pcm(seconds: float, freq: float = 440.0, rate: int = 8000, amplitude: int = 8000) -> bytes:
    n = int(seconds * rate)
    return b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * freq * i / rate)))
                    for i in range(n))


def write_wav(path: Path, pcm: bytes, channels: int = 1, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


def korean_speech(path: Path, text: str, *, pad: float = 0.3, speed: int = 140, repeat: int = 0) -> Path:
    """``text`` spoken by espeak-ng's Korean voice, as 8 kHz mono 16-bit (telephone) audio."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-s", str(speed), "-w", str(raw), text], check=True, timeout=60)
    command = ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path), "pad", str(pad), str(pad)]
    if repeat:
        command += ["repeat", str(repeat)]
    subprocess.run(command, check=True, timeout=60)
    raw.unlink()
    return path


def search_scenario(session: Session) -> dict[str, CallRows]:
    """Three calls with transcripts and notes; returns the ids the search checks refer to."""
    from datetime import timedelta

    from callcentre.db.models import Transcript

    now = utcnow()
    billing = make_call(session, reason="billing", note="환불 처리 완료", suffix="1001",
                        arrived_at=now - timedelta(days=10))
    tech = make_call(session, reason="technical", note="모뎀 재부팅 안내", suffix="1002",
                     arrived_at=now - timedelta(days=1))
    other = make_call(session, reason="billing", note="", suffix="1003", arrived_at=now)
    session.add_all([
        Transcript(call_id=billing.call.id,
                   text="caller: 지난달 요금이 너무 많이 나왔어요\nagent: 확인해 보겠습니다"),
        Transcript(call_id=tech.call.id, text="caller: 인터넷이 자꾸 끊어져요 요금도 궁금해요"),
        Transcript(call_id=other.call.id, text="caller: 주소 변경 하려고요"),
    ])
    tech.customer.notes = "VIP 고객 요금제 변경 희망"
    session.flush()
    return {"billing": billing, "tech": tech, "other": other}


def check_search(session: Session, rows: dict[str, CallRows]) -> None:
    """The same expectations on every database engine."""
    from datetime import timedelta

    from recordings.search import SearchFilters, search

    billing, tech, other = rows["billing"], rows["tech"], rows["other"]
    hits = search(session, "요금")  # prefix: 요금이, 요금도, 요금제
    assert [(h.kind, h.call_id) for h in hits] == [
        ("transcript", tech.call.id),
        ("transcript", billing.call.id),
        ("customer_note", None),
    ]
    assert hits[2].customer_id == tech.customer.id
    assert "[요금" in hits[0].snippet
    by_reason = search(session, "요금", SearchFilters(reason="billing"))
    assert {h.call_id for h in by_reason} == {billing.call.id}
    by_customer = search(session, "요금", SearchFilters(customer_id=tech.customer.id))
    assert [h.kind for h in by_customer] == ["transcript", "customer_note"]
    by_agent = search(session, "요금", SearchFilters(agent_id=billing.agent.id))
    assert [h.call_id for h in by_agent] == [billing.call.id]
    recent = search(session, "요금", SearchFilters(since=utcnow() - timedelta(days=5), kinds=("transcript",)))
    assert [h.call_id for h in recent] == [tech.call.id]
    assert [h.call_id for h in search(session, "환불")] == [billing.call.id]
    assert search(session, "요금 인터넷")[0].call_id == tech.call.id
    assert search(session, "없는단어") == []
    # FTS syntax in user input is inert, never an error or an injection.
    for hostile in ('"', "요금 OR", "NEAR(", "'; DROP TABLE calls; --", "*", ""):
        search(session, hostile)
    # Notes are kept current: a wrap-up note written later is found.
    other.call.wrap_up_note = "주소 변경 완료"
    session.flush()
    assert [h.kind for h in search(session, "주소")] == ["call_note", "transcript"]
