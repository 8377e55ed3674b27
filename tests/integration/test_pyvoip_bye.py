"""Defect 2: the phone's own BYE.

Stock 1.6.8 builds its BYE from the caller's INVITE: it copies the caller's Via headers (so the BYE
carries the caller's branch, as if it were a response), has no Route header and uses the INVITE's
CSeq + 1 every time. The hardened BYE has its own Via with a fresh branch, the dialog's Route set,
and the dialog's own CSeq, which increases with every request.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from telephony.pyvoip_patches import import_pyvoip
from tests.integration.pyvoip_support import Received, hardened_phone, raw_peer, sdp_offer, stock_phone
from tests.kamailio import Kamailio, kamailio_fixture  # noqa: F401  (the kamailio fixture)

pytestmark = pytest.mark.peer
_voip, _sip, _rtp = import_pyvoip()


def answer_then_hang_up(calls: list[Any], after: float = 0.3) -> Any:
    def handler(call: Any) -> None:
        calls.append(call)
        call.answer()
        time.sleep(after)
        call.hangup()

    return handler


def invite_with_record_route(peer_port: int, proxy_port: int, phone_port: int) -> tuple[bytes, str]:
    branch = "z9hG4bKcallerbranch1"
    body = sdp_offer(40100)
    text = (
        f"INVITE sip:1000@127.0.0.1:{phone_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer_port};branch={branch};rport\r\n"
        f"Record-Route: <sip:127.0.0.1:{proxy_port};lr>\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:5551234@127.0.0.1:{peer_port}>;tag=callertag\r\n"
        f"To: <sip:1000@127.0.0.1:{phone_port}>\r\n"
        "Call-ID: bye-test-1@127.0.0.1\r\n"
        "CSeq: 7 INVITE\r\n"
        f"Contact: <sip:5551234@127.0.0.1:{peer_port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    return text.encode(), branch


def test_stock_bye_copies_the_callers_via_and_has_no_route() -> None:
    raw, branch = invite_with_record_route(5062, 5070, 5060)
    request = _sip.SIPMessage(raw)
    client = _sip.SIPClient("127.0.0.1", 5080, "1000", "", phone=None, myIP="127.0.0.1", myPort=5060)
    client.tagLibrary[request.headers["Call-ID"]] = "ourtag"
    first = Received.parse(client.gen_bye(request).encode(), ("127.0.0.1", 5060))
    second = Received.parse(client.gen_bye(request).encode(), ("127.0.0.1", 5060))
    assert first.method == "BYE"
    assert branch in first.header("via") and "127.0.0.1:5062" in first.header("via")  # the caller's Via
    assert "route" not in first.headers
    assert first.header("cseq") == second.header("cseq") == "8 BYE"  # INVITE CSeq + 1, every time


def test_hardened_bye_has_own_via_route_set_and_increasing_cseq() -> None:
    calls: list[Any] = []
    with hardened_phone(answer_then_hang_up(calls)) as phone, raw_peer() as caller, raw_peer() as proxy:
        raw, branch = invite_with_record_route(caller.port, proxy.port, phone.sip_port)
        caller.send(raw, ("127.0.0.1", phone.sip_port))
        ok = caller.wait_for(lambda r: r.status == 200)
        assert ok is not None
        assert ok.headers.get("record-route") == [f"<sip:127.0.0.1:{proxy.port};lr>"]  # copied into the 200
        # The BYE goes to the first Route (the proxy), not to the caller or a registrar.
        bye = proxy.wait_for(lambda r: r.method == "BYE")
        assert bye is not None
        assert bye.start == f"BYE sip:5551234@127.0.0.1:{caller.port} SIP/2.0"
        vias = bye.headers["via"]
        assert len(vias) == 1 and f"127.0.0.1:{phone.sip_port}" in vias[0]
        assert branch not in vias[0] and ";branch=z9hG4bK" in vias[0]
        assert bye.headers["route"] == [f"<sip:127.0.0.1:{proxy.port};lr>"]
        assert bye.header("from").endswith(ok.header("to").split(";tag=")[1])
        assert bye.header("to").endswith("tag=callertag")
        cseq = int(bye.header("cseq").split()[0])
        assert bye.header("cseq").endswith(" BYE")
        call = calls[0]
        assert call.end_reason == "local-bye"
        # The dialog's CSeq keeps counting for any further request.
        later = Received.parse(call.dialog.request("INFO", "127.0.0.1", phone.sip_port), ("127.0.0.1", 0))
        assert int(later.header("cseq").split()[0]) == cseq + 1


def test_stock_bye_through_kamailio_never_reaches_the_caller(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    with stock_phone(answer_then_hang_up(calls), kamailio) as _phone, raw_peer() as caller:
        dialogue = caller.invite("1000", kamailio.address, rtp_port=40110)
        ok = dialogue.response(200, timeout=4)
        assert ok is not None
        dialogue.ack(ok)
        assert dialogue.request("BYE", timeout=2.5) is None


def test_hardened_bye_through_kamailio_reaches_the_caller(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    with hardened_phone(answer_then_hang_up(calls), kamailio=kamailio) as phone, raw_peer() as caller:
        dialogue = caller.invite("1000", kamailio.address, rtp_port=40112)
        ok = dialogue.response(200)
        assert ok is not None
        dialogue.ack(ok)
        bye = dialogue.request("BYE", timeout=3)
        assert bye is not None
        assert bye.source == kamailio.address  # routed through the Record-Route'd proxy
        vias = bye.headers["via"]
        assert len(vias) == 2 and f"127.0.0.1:{phone.sip_port}" in vias[1]
        assert dialogue.branch not in " ".join(vias)
