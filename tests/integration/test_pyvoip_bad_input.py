"""Defect 4 (SDP), unsupported codecs → 488, unknown numbers → 404, malformed SIP → 400 or drop.

Stock runs behind a real kamailio (it cannot run unregistered); the hardened phone runs direct.
Malformed input is sent from a raw UDP socket on 127.0.0.1 so every byte is what the test says.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from telephony.pyvoip_patches import HardenedSIPMessage, import_pyvoip, uri_user
from tests.integration.pyvoip_support import hardened_phone, raw_peer, sdp_offer, stock_phone
from tests.kamailio import Kamailio, kamailio_fixture  # noqa: F401  (the kamailio fixture)

pytestmark = pytest.mark.peer
_voip, _sip, _rtp = import_pyvoip()

# An rtpmap for payload type 96, which the m= line does not list (RFC 4566 lets a receiver ignore it).
STRAY_RTPMAP = "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
G729_ONLY = "a=rtpmap:18 G729/8000\r\n"


def answering(calls: list[Any]) -> Any:
    def handler(call: Any) -> None:
        calls.append(call)
        call.answer()
        time.sleep(0.5)

    return handler


def invite_bytes(sdp: str) -> bytes:
    return (
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx1;rport\r\n"
        "From: <sip:5551234@127.0.0.1>;tag=a\r\nTo: <sip:1000@127.0.0.1>\r\n"
        "Call-ID: sdp-1\r\nCSeq: 1 INVITE\r\nContact: <sip:5551234@127.0.0.1:5062>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


# -- defect 4: a=rtpmap for a payload type not on the m= line ----------------------------------


def test_stock_parser_crashes_on_a_stray_rtpmap() -> None:
    raw = invite_bytes(sdp_offer(40200, "0 101", STRAY_RTPMAP))
    with pytest.raises(Exception):  # noqa: B017 - stock raises an arbitrary error (UnboundLocalError/KeyError)
        _sip.SIPMessage(raw)
    message = HardenedSIPMessage(raw)
    assert [m["methods"] for m in message.body["m"]] == [["0", "101"]]
    assert message.body["m"][0]["attributes"]["0"]["rtpmap"]["name"] == "PCMU"


def test_stock_phone_drops_an_invite_with_a_stray_rtpmap(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    with stock_phone(answering(calls), kamailio) as _phone, raw_peer() as caller:
        dialogue = caller.invite("1000", kamailio.address, sdp=sdp_offer(40202, "0 101", STRAY_RTPMAP))
        assert dialogue.response(180, timeout=2.5) is None
        assert calls == []


def test_hardened_phone_answers_an_invite_with_a_stray_rtpmap() -> None:
    calls: list[Any] = []
    with hardened_phone(answering(calls)) as phone, raw_peer() as caller:
        dialogue = caller.invite("1000", ("127.0.0.1", phone.sip_port), sdp=sdp_offer(40204, "0 101", STRAY_RTPMAP))
        ok = dialogue.response(200)
        assert ok is not None
        assert "m=audio" in ok.body and "RTP/AVP 0 101" in ok.body
        dialogue.ack(ok)


# -- unsupported codecs only → 488 -------------------------------------------------------------


def test_stock_answers_unsupported_codecs_and_its_rtp_sender_dies(kamailio: Kamailio) -> None:
    calls: list[Any] = []
    crashed: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: crashed.append(f"{args.thread.name}: {args.exc_type.__name__}")
    try:
        with stock_phone(answering(calls), kamailio) as _phone, raw_peer() as caller:
            dialogue = caller.invite("1000", kamailio.address, sdp=sdp_offer(40206, "18", G729_ONLY))
            final = dialogue.final(timeout=3)
            assert final is not None and final.status == 200  # accepted a call it cannot carry
            dialogue.ack(final)
            time.sleep(0.3)
    finally:
        threading.excepthook = previous
    assert "RTP Transmitter: AttributeError" in crashed  # no codec chosen: the sender thread crashes


@pytest.mark.parametrize(
    "sdp",
    [
        sdp_offer(40208, "18", G729_ONLY),
        sdp_offer(40208, "0", "a=rtpmap:0 PCMU/8000\r\n").replace("RTP/AVP", "RTP/SAVP"),
        "",  # no offer at all (late offer is not supported)
    ],
    ids=["g729-only", "srtp", "no-sdp"],
)
def test_hardened_refuses_unsupported_media_with_488(sdp: str) -> None:
    calls: list[Any] = []
    with hardened_phone(answering(calls)) as phone, raw_peer() as caller:
        dialogue = caller.invite("1000", ("127.0.0.1", phone.sip_port), sdp=sdp)
        final = dialogue.final()
        assert final is not None and final.status == 488
        dialogue.ack(final)
        assert calls == [] and phone.calls == {}


# -- unknown numbers → 404 (the endpoint's hook) -----------------------------------------------


def test_hardened_screen_hook_refuses_unknown_numbers_with_404() -> None:
    calls: list[Any] = []
    with (
        hardened_phone(answering(calls), screen_call=lambda req: None if uri_user(req.uri) == "1000" else 404) as phone,
        raw_peer() as caller,
    ):
        unknown = caller.invite("9999", ("127.0.0.1", phone.sip_port), rtp_port=40210)
        known = caller.invite("1000", ("127.0.0.1", phone.sip_port), rtp_port=40212)
        refused, ok = unknown.final(), known.final()
        assert refused is not None and refused.status == 404
        assert ok is not None and ok.status == 200
        unknown.ack(refused)
        known.ack(ok)
        assert [c.dialled for c in calls] == ["1000"]


# -- garbage and malformed SIP -----------------------------------------------------------------

MISSING_CALL_ID = (
    "INVITE sip:1000@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbad1;rport\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)
BAD_CSEQ = (
    "INVITE sip:1000@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbad2;rport\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: bad-2\r\nCSeq: one INVITE\r\n"
    "Content-Length: 0\r\n\r\n"
)
BAD_SDP = (
    "INVITE sip:1000@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbad3;rport\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: bad-3\r\nCSeq: 1 INVITE\r\n"
    "Content-Type: application/sdp\r\nContent-Length: 20\r\n\r\nm=audio x RTP/AVP 0\r\n"
)
OLD_VERSION = (
    "OPTIONS sip:1000@127.0.0.1 SIP/1.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbad4;rport\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: bad-4\r\nCSeq: 1 OPTIONS\r\n\r\n"
)
OPTIONS = (
    "OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKopt;rport\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)
UNKNOWN_METHOD = OPTIONS.replace("OPTIONS", "PUBLISH").replace("opt-1", "pub-1")
BYE_UNKNOWN_CALL = (
    OPTIONS.replace("OPTIONS", "BYE")
    .replace("opt-1", "nobody-1")
    .replace("To: <sip:1000@127.0.0.1>", "To: <sip:1000@127.0.0.1>;tag=x")
)
GARBAGE = [
    b"",
    b"\r\n\r\n",
    b"\x00\x00\x00\x00",
    os.urandom(700),
    b"\xff\xfe INVITE",
    b"SIP/2.0 200 OK\r\n\r\n",
    b"INVITE\r\n\r\n",
    b"HELLO WORLD",
    b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n",
]


def test_stock_sends_no_400_for_malformed_sip(kamailio: Kamailio) -> None:
    with stock_phone(answering([]), kamailio) as phone, raw_peer() as peer:
        peer.send(MISSING_CALL_ID.format(port=peer.port), ("127.0.0.1", phone.sip.myPort))
        peer.send(OPTIONS.format(port=peer.port), ("127.0.0.1", phone.sip.myPort))
        time.sleep(1.5)
        assert peer.received == []  # neither 400 nor an answer to OPTIONS, to anyone at this address


def test_hardened_answers_malformed_sip_and_survives_garbage() -> None:
    calls: list[Any] = []
    with hardened_phone(answering(calls)) as phone, raw_peer() as peer:
        target = ("127.0.0.1", phone.sip_port)
        for datagram in GARBAGE:
            peer.send(datagram, target)
        for text, call_id in [(MISSING_CALL_ID, None), (BAD_CSEQ, "bad-2"), (BAD_SDP, "bad-3")]:
            peer.send(text.format(port=peer.port), target)
            if call_id:
                reply = peer.wait_for(lambda r, cid=call_id: r.header("call-id") == cid)
                assert reply is not None and reply.status == 400, reply
                assert reply.header("warning").startswith("399 callcentre")
        no_call_id = peer.wait_for(lambda r: "z9hG4bKbad1" in r.header("via"), timeout=1)
        assert no_call_id is None  # no Call-ID to echo: dropped, not answered
        peer.send(OLD_VERSION.format(port=peer.port), target)
        version = peer.wait_for(lambda r: r.header("call-id") == "bad-4")
        assert version is not None and version.status == 505
        peer.send(OPTIONS.format(port=peer.port), target)
        options = peer.wait_for(lambda r: r.header("call-id") == "opt-1")
        assert options is not None and options.status == 200 and "INVITE" in options.header("allow")
        peer.send(UNKNOWN_METHOD.format(port=peer.port), target)
        unknown = peer.wait_for(lambda r: r.header("call-id") == "pub-1")
        assert unknown is not None and unknown.status == 405
        peer.send(BYE_UNKNOWN_CALL.format(port=peer.port), target)
        nobody = peer.wait_for(lambda r: r.header("call-id") == "nobody-1")
        assert nobody is not None and nobody.status == 481
        # After all that, the SIP thread still takes calls.
        dialogue = peer.invite("1000", target, rtp_port=40214)
        ok = dialogue.response(200)
        assert ok is not None
        dialogue.ack(ok)
        stats = phone.sip.stats
        assert stats["handler_errors"] == 0
        assert stats["bad_request_sent"] >= 2 and stats["dropped"] >= 5
