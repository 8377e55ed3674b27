"""Defects 3, 5 and 8 on the wire: CANCEL, answer delay, where responses go.

Each scenario runs against stock pyVoIP 1.6.8 (which can only run registered, so it sits behind a
real kamailio) and against the hardened phone, with a raw-UDP caller on 127.0.0.1. The stock half
asserts the defect is really there; the hardened half asserts it is gone.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.integration.pyvoip_support import hardened_phone, raw_peer, stock_phone
from tests.kamailio import Kamailio, kamailio_fixture  # noqa: F401  (the kamailio fixture)

pytestmark = pytest.mark.peer


def answering_handler(calls: list[Any], hold: float = 1.0) -> Any:
    def handler(call: Any) -> None:
        calls.append(call)
        try:
            call.answer()
        except Exception as exc:  # stock raises nothing here; hardened raises if cancelled
            calls.append(exc)
            return
        time.sleep(hold)

    return handler


# -- defect 5: the fixed 1 s answer timer ------------------------------------------------------


def test_stock_answers_no_sooner_than_one_second(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    with stock_phone(answering_handler(calls), kamailio) as _phone, raw_peer() as peer:
        dialogue = peer.invite("1000", kamailio.address, rtp_port=40010)
        ok = dialogue.response(200, timeout=5)
        assert ok is not None
        dialogue.ack(ok)
        assert ok.at - dialogue.sent_at >= 1.0


@pytest.mark.parametrize("through_kamailio", [False, True], ids=["direct", "kamailio"])
def test_hardened_answers_at_once(kamailio: Kamailio, through_kamailio: bool) -> None:
    calls: list[Any] = []
    latencies = []
    with (
        hardened_phone(answering_handler(calls, hold=0.2), kamailio=kamailio if through_kamailio else None) as phone,
        raw_peer() as peer,
    ):
        target = kamailio.address if through_kamailio else ("127.0.0.1", phone.sip_port)
        for n in range(5):
            dialogue = peer.invite("1000", target, rtp_port=40020 + 2 * n)
            ok = dialogue.response(200, timeout=3)
            assert ok is not None
            dialogue.ack(ok)
            latencies.append(ok.at - dialogue.sent_at)
    # INVITE → 200 OK including the handler thread start; stock needs ≥ 1 s.
    assert max(latencies) < 0.15, latencies


# -- defect 8: responses go to the registrar ---------------------------------------------------


def test_stock_sends_responses_to_the_registrar_not_the_caller(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    with stock_phone(answering_handler(calls), kamailio) as phone, raw_peer() as peer:
        dialogue = peer.invite("1000", ("127.0.0.1", phone.sip.myPort), rtp_port=40030)
        time.sleep(2.5)  # past the stock 1 s answer timer
        from_phone = peer.all(
            lambda r: r.header("call-id") == dialogue.call_id and r.source == ("127.0.0.1", phone.sip.myPort)
        )
        assert from_phone == []
        assert calls, "the stock phone did take the call; only its answers went astray"


def test_hardened_answers_the_sender(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    with hardened_phone(answering_handler(calls), kamailio=kamailio) as phone, raw_peer() as peer:
        # Registered to kamailio, but this caller (a trunk, say) comes in directly.
        dialogue = peer.invite("1000", ("127.0.0.1", phone.sip_port), rtp_port=40032)
        ringing = dialogue.response(180)
        ok = dialogue.response(200)
        assert ringing is not None and ok is not None
        assert ok.source == ("127.0.0.1", phone.sip_port)
        top_via = ok.headers["via"][0]
        assert f"rport={peer.port}" in top_via and "received=127.0.0.1" in top_via
        dialogue.ack(ok)


# -- defect 3: CANCEL before answer ------------------------------------------------------------


def slow_answering_handler(calls: list[Any], delay: float) -> Any:
    def handler(call: Any) -> None:
        calls.append(call)
        time.sleep(delay)  # the IVR is still deciding when the caller gives up
        try:
            call.answer()
            calls.append("answered")
        except Exception as exc:
            calls.append(exc)

    return handler


def test_stock_cancel_gets_no_487_and_the_call_is_answered(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    with stock_phone(slow_answering_handler(calls, 0.0), kamailio) as _phone, raw_peer() as peer:
        dialogue = peer.invite("1000", kamailio.address, rtp_port=40040)
        assert dialogue.response(180, timeout=3) is not None
        dialogue.cancel()
        assert dialogue.response(200, method="CANCEL", timeout=3) is not None
        final = dialogue.final(timeout=4)
        assert final is not None and final.status == 200  # answered after the caller cancelled
        assert "answered" in calls
        dialogue.ack(final)


@pytest.mark.parametrize("through_kamailio", [False, True], ids=["direct", "kamailio"])
def test_hardened_cancel_gets_487_and_is_not_answered(kamailio: Kamailio, through_kamailio: bool) -> None:
    calls: list[Any] = []
    cancelled = threading.Event()
    with (
        hardened_phone(
            slow_answering_handler(calls, 0.5),
            kamailio=kamailio if through_kamailio else None,
            on_cancelled=lambda call: cancelled.set(),
        ) as phone,
        raw_peer() as peer,
    ):
        target = kamailio.address if through_kamailio else ("127.0.0.1", phone.sip_port)
        dialogue = peer.invite("1000", target, rtp_port=40042)
        assert dialogue.response(180) is not None
        dialogue.cancel()
        assert dialogue.response(200, method="CANCEL") is not None
        final = dialogue.final(timeout=3)
        assert final is not None and final.status == 487
        dialogue.ack(final)
        assert cancelled.wait(2)
        time.sleep(0.7)  # the handler wakes and tries to answer
        call = calls[0]
        assert call.end_reason == "cancelled" and call.cancelled
        assert "answered" not in calls and isinstance(calls[-1], Exception)
        assert dialogue.response(200, timeout=0.2) is None
        assert phone.calls == {}
