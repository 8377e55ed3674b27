"""The supervision mixer on real RTP sessions (loopback UDP): who hears whom, clipping, at most one frame held."""

from __future__ import annotations

import audioop
import socket
from collections.abc import Iterator

import pytest

from telephony.audio import PCMA, PCMU, decode, tone_linear16
from telephony.rtp_relay import MediaEngine, RtpSession
from telephony.supervision import FRAME_BYTES, HEARS, Mixer, mix


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    e = MediaEngine("127.0.0.1")  # not started: the test drives ``Mixer.tick`` itself, as the clock would
    yield e
    e.stop()


def ears(engine: MediaEngine, pts: dict[str, int]) -> tuple[dict[str, RtpSession], dict[str, socket.socket]]:
    sessions, socks = {}, {}
    for party, pt in pts.items():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        session = engine.open_session(pt, 101)
        session.set_remote(*sock.getsockname())
        sessions[party], socks[party] = session, sock
    return sessions, socks


def received(sock: socket.socket) -> list[bytes]:
    """Every RTP packet waiting on ``sock``, as 16-bit linear audio."""
    out = []
    sock.settimeout(0.05)
    while True:
        try:
            packet = sock.recv(2048)
        except TimeoutError:
            return out
        out.append(decode(packet[12:], packet[1] & 0x7F))


def distance(pair: tuple[bytes, bytes]) -> int:
    """RMS of the difference of two 16-bit frames."""
    a, b = pair
    return int(audioop.rms(audioop.add(a, audioop.mul(b, 2, -1), 2), 2))


def frame(freq: float, level: float = 0.3) -> bytes:
    return tone_linear16((freq,), 0.02, level)


@pytest.mark.parametrize("mode", ["listen", "whisper", "barge"])
def test_each_listener_gets_one_mixed_frame_per_tick_from_the_right_parties(engine: MediaEngine, mode: str) -> None:
    sessions, socks = ears(engine, {"caller": PCMU, "agent": PCMA, "supervisor": PCMU})
    mixer = Mixer(sessions, mode)
    voices = {"caller": frame(500), "agent": frame(1400), "supervisor": frame(2000)}
    for party, pcm in voices.items():
        mixer.feeder(party)(pcm)
    mixer.tick()
    for party in ("caller", "agent", "supervisor"):
        got = received(socks[party])
        sources = HEARS[mode].get(party)
        if sources is None:
            assert got == [], (mode, party)  # the mixer never writes to this party in this mode
            continue
        assert len(got) == 1, (mode, party)
        expected = mix([voices[s] for s in sources])
        # G.711 round trip: close to the exact linear sum, far from any other combination
        assert distance((got[0], expected)) < 0.05 * audioop.rms(expected, 2), (mode, party)
        for other in set(voices) - set(sources):
            wrong = mix([voices[s] for s in (*sources, other)])
            assert distance((got[0], wrong)) > 0.3 * audioop.rms(expected, 2)


def test_only_the_newest_frame_waits_and_a_silent_tick_sends_silence(engine: MediaEngine) -> None:
    sessions, socks = ears(engine, {"caller": PCMU, "agent": PCMU, "supervisor": PCMU})
    mixer = Mixer(sessions, "listen")
    feed_caller = mixer.feeder("caller")
    feed_caller(frame(500))
    feed_caller(frame(900))  # two frames before one tick: the older is dropped, nothing queues up
    mixer.tick()
    mixer.tick()  # nothing new arrived: silence, not a delayed copy
    first, second = received(socks["supervisor"])
    assert distance((first, frame(900))) < 0.05 * audioop.rms(frame(900), 2)
    assert audioop.rms(second, 2) < 20


def test_mix_clips_instead_of_wrapping() -> None:
    loud = (30000).to_bytes(2, "little", signed=True) * (FRAME_BYTES // 2)
    out = mix([loud, loud])
    assert len(out) == FRAME_BYTES and audioop.minmax(out, 2) == (32767, 32767)
    assert mix([]) == bytes(FRAME_BYTES)
