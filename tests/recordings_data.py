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
              arrived_at: datetime | None = None) -> CallRows:
    customer = Customer(name="Kim " + suffix, account_number="ACC" + (suffix or new_call_id()[-8:]))
    customer.phones.append(CustomerPhone(number="+8210" + (suffix or new_call_id()[-8:])))
    session.add(customer)
    agent = make_agent(session, "agent" + (suffix or new_call_id()[-6:]))
    other = make_agent(session, "other" + (suffix or new_call_id()[-6:]))
    supervisor = make_agent(session, "super" + (suffix or new_call_id()[-6:]), role="supervisor")
    call = Call(id=new_call_id(), caller_id="+8210", customer_id=customer.id, reason=reason,
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
