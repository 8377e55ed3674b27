"""The SIP endpoint's pure parts: SDP offers, tolerant SIP parsing, responses, G.711, RFC 4733 digits."""

from __future__ import annotations

import audioop
import struct

import pytest

from telephony.audio import PCMA, PCMU, decode, encode, linear16_to_pyvoip8, pyvoip8_to_linear16, tone_linear16
from telephony.rtp_relay import MediaEngine, RtpSession
from telephony.sdp import SdpError, build_sdp, parse_offer
from telephony.sip_message import SipSyntaxError, bad_request_for, build_response, host_port_of, parse, user_of

OFFER = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
         "m=audio 4000 RTP/AVP 18 8 0 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:8 PCMA/8000\r\n"
         "a=rtpmap:101 telephone-event/8000\r\na=rtpmap:96 opus/48000/2\r\na=sendrecv\r\n")


def test_offer_picks_first_g711_in_callers_order_and_ignores_stray_rtpmap() -> None:
    offer = parse_offer(OFFER)
    assert (offer.address, offer.port) == ("10.0.0.9", 4000)
    assert offer.choose_audio() == PCMA
    assert offer.telephone_event() == 101
    assert 96 not in offer.rtpmap  # rtpmap for a payload type not on the m= line: ignored, no crash


def test_offer_without_g711_has_no_codec_and_broken_offers_raise() -> None:
    assert parse_offer(OFFER.replace(" 8 0 101", " 101")).choose_audio() is None
    with pytest.raises(SdpError):
        parse_offer("v=0\r\nc=IN IP4 1.2.3.4\r\n")
    with pytest.raises(SdpError):
        parse_offer("v=0\r\nm=audio 4000 RTP/AVP 0\r\n")  # no address


def test_answer_sdp_lists_codec_and_events() -> None:
    sdp = build_sdp(7, "127.0.0.1", 12000, PCMU, 101)
    assert "m=audio 12000 RTP/AVP 0 101" in sdp and "a=rtpmap:101 telephone-event/8000" in sdp


INVITE = (
    "INVITE sip:1000@127.0.0.1:5060 SIP/2.0\r\n"
    "v: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKb\r\n"
    "f: \"Bob\" <sip:555@10.0.0.2>;tag=abc\r\nt: <sip:1000@127.0.0.1>\r\ni: cid-1\r\n"
    "CSeq: 7 INVITE\r\nContact: <sip:555@10.0.0.2:5062>\r\nSubject: a\r\n folded\r\n"
    "Content-Length: 4\r\n\r\nbodyEXTRA"
)


def test_parse_handles_compact_and_comma_folded_headers() -> None:
    msg = parse(INVITE.encode())
    assert msg.method == "INVITE" and msg.call_id == "cid-1" and msg.cseq == (7, "INVITE")
    assert len(msg.get_all("via")) == 2 and msg.top_via_branch == "z9hG4bKa"
    assert msg.from_tag == "abc" and msg.body == b"body"
    assert msg.get("subject") == "a folded"
    assert user_of("sip:1000@h:5060;transport=udp") == "1000"
    assert host_port_of("<sip:agent@10.1.1.1:5070;lr>") == ("10.1.1.1", 5070)


def test_response_copies_every_via_and_adds_our_tag() -> None:
    msg = parse(INVITE.encode())
    text = build_response(msg, 486, "Busy Here", to_tag="ours").decode()
    assert text.startswith("SIP/2.0 486 Busy Here\r\n")
    assert text.count("Via: ") == 2 and "To: <sip:1000@127.0.0.1>;tag=ours" in text
    assert "CSeq: 7 INVITE" in text and text.endswith("Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize("broken", [
    INVITE.replace("CSeq: 7 INVITE", "CSeq: seven INVITE"),
    INVITE.replace("i: cid-1\r\n", ""),
    INVITE.replace("Content-Length: 4", "Content-Length: four"),
])
def test_malformed_requests_raise_and_can_be_answered_with_400(broken: str) -> None:
    with pytest.raises(SipSyntaxError):
        parse(broken.encode())
    reply = bad_request_for(broken.encode(), "bad")
    assert reply is not None and reply.startswith(b"SIP/2.0 400 ")


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe\x00", b"hello", b"SIP/2.0 20 OK\r\n\r\n", b"INVITE x\r\n"])
def test_garbage_raises_syntax_error_only(garbage: bytes) -> None:
    with pytest.raises(SipSyntaxError):
        parse(garbage)
    assert bad_request_for(garbage, "x") is None


def test_g711_round_trip_and_pyvoip_8bit() -> None:
    pcm = tone_linear16((1000.0,), 0.02, 0.5)
    for pt in (PCMU, PCMA):
        back = decode(encode(pcm, pt), pt)
        assert audioop.rms(back, 2) == pytest.approx(audioop.rms(pcm, 2), rel=0.05)
    assert encode(pcm, PCMA) == audioop.lin2alaw(pcm, 2)  # A-law really is A-law (pyVoIP sends μ-law)
    eight = linear16_to_pyvoip8(pcm)
    assert len(eight) == 160 and min(eight) > 0  # unsigned, biased around 128
    assert audioop.rms(pyvoip8_to_linear16(eight), 2) == pytest.approx(audioop.rms(pcm, 2), rel=0.05)


def _event(ts: int, event: int, end: bool, marker: bool = False, seq: int = 0) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 101, seq, ts, 1234)
    return header + bytes([event, 0x8A if end else 0x0A]) + struct.pack("!H", 160)


def test_rfc4733_one_digit_per_event_even_when_a_pcap_is_replayed() -> None:
    """The shipped pcaps: 7 packets + 3 end packets per key, same timestamp; replaying a pcap repeats it."""
    engine = MediaEngine("127.0.0.1")
    digits: list[str] = []
    session = engine.open_session(PCMU, 101, on_dtmf=digits.append)
    try:
        for _ in range(2):  # the same pcap (same RTP timestamp) played twice = two presses
            packets = [_event(13280, 1, False, marker=True)] + [_event(13280, 1, False)] * 6
            packets += [_event(13280, 1, True)] * 3
            for p in packets:
                session._receive(p)
        session._receive(_event(20000, 11, False, marker=True))  # '#'
        session._receive(b"\x00garbage")
        assert digits == ["1", "1", "#"]
        assert session.stats.dropped_garbage == 1
    finally:
        session.close()
        engine.stop()


def test_rtp_session_plays_clips_then_background() -> None:
    from telephony.audio import EncodedClip

    engine = MediaEngine("127.0.0.1")
    session: RtpSession = engine.open_session(PCMU, 101)
    done: list[bool] = []
    try:
        clip = EncodedClip("p", PCMU, (b"\x01" * 160, b"\x02" * 160))
        music = EncodedClip("m", PCMA, (b"\x55" * 160,))
        session.play([clip], on_played=lambda: done.append(True))
        session.set_background(music)
        frames = [session._next_frame() for _ in range(4)]
        assert frames[:2] == [b"\x01" * 160, b"\x02" * 160]
        assert frames[2] == audioop.lin2ulaw(audioop.alaw2lin(b"\x55" * 160, 2), 2)  # A-law music → μ-law leg
        engine._run_callbacks(0.0)
        assert done == [True]
    finally:
        session.close()
        engine.stop()
