"""Pure parts of the SIP callback dialler: the reason for each refusal, digest answers, the ringback tone."""

from __future__ import annotations

import audioop

import pytest

from telephony.audio import decode
from telephony.sip_callback import callback_reason, digest_authorization, ringback_clip
from telephony.sip_message import parse


@pytest.mark.parametrize(
    ("status", "reason"),
    [(486, "busy"), (600, "busy"), (603, "rejected"), (404, "rejected"), (480, "rejected"), (302, "rejected"),
     (408, "failed"), (503, "failed"), (504, "failed")],
)
def test_refusals_map_to_the_contract_reasons(status: int, reason: str) -> None:
    assert callback_reason(status) == reason


def challenge(status: int, header: str, value: str) -> bytes:
    return (f"SIP/2.0 {status} Challenge\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
            "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
            f"{header}: {value}\r\nContent-Length: 0\r\n\r\n").encode()


def test_digest_with_qop_matches_the_rfc_2617_worked_example() -> None:
    """RFC 2617 §3.5: Mufasa / "Circle Of Life", GET /dir/index.html → response 6629fae4…"""
    msg = parse(challenge(401, "WWW-Authenticate", 'Digest realm="testrealm@host.com", qop="auth,auth-int", '
                          'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'))
    header = digest_authorization(msg, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b")
    assert header is not None and header.startswith("Authorization: Digest ")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "qop=auth, nc=00000001" in header and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header


def test_proxy_challenge_without_qop_and_unusable_challenges() -> None:
    msg = parse(challenge(407, "Proxy-Authenticate", 'Digest realm="r", nonce="n"'))
    header = digest_authorization(msg, "INVITE", "sip:1@h", "u", "p")
    assert header is not None and header.startswith("Proxy-Authorization: Digest ") and "qop" not in header
    # RFC 2069 response: MD5(HA1:nonce:HA2)
    import hashlib

    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:1@h").hexdigest()
    assert f'response="{hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()}"' in header
    for value in ('Basic realm="r"', 'Digest realm="r"', 'Digest realm="r", nonce="n", algorithm=SHA-256'):
        assert digest_authorization(parse(challenge(401, "WWW-Authenticate", value)), "INVITE", "u", "u", "p") is None


def test_ringback_is_425_hz_one_second_on_four_off() -> None:
    clip = ringback_clip(0)
    assert clip.seconds == pytest.approx(5.0)
    pcm = b"".join(decode(f, 0) for f in clip.frames)
    on, off = pcm[: 16000], pcm[16000:]
    assert audioop.rms(on, 2) > 1000 and audioop.rms(off, 2) < 50
    assert 840 <= audioop.cross(on, 2) <= 860  # 425 Hz: 850 zero crossings a second
