"""Registration with digest authentication against a real kamailio (auth module, one password)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from telephony.pyvoip_patches import RegistrationError
from tests.integration.pyvoip_support import hardened_phone, raw_peer
from tests.kamailio import start_kamailio

pytestmark = pytest.mark.peer


@pytest.mark.parametrize("qop", [False, True], ids=["rfc2069", "qop-auth"])
def test_register_with_digest_then_take_a_call(tmp_path: Path, qop: bool) -> None:
    registrar = start_kamailio(tmp_path / "kamailio", password="s3cret-pw", qop=qop)
    calls: list[Any] = []
    try:
        with (
            hardened_phone(
                lambda call: (calls.append(call), call.answer()), kamailio=registrar, password="s3cret-pw"
            ) as phone,
            raw_peer() as caller,
        ):
            assert phone.sip.registered.is_set()
            dialogue = caller.invite("1000", registrar.address, rtp_port=40300)
            ok = dialogue.response(200)
            assert ok is not None
            dialogue.ack(ok)
    finally:
        registrar.stop()
    assert len(calls) == 1


def test_wrong_password_is_a_clear_error(tmp_path: Path) -> None:
    registrar = start_kamailio(tmp_path / "kamailio", password="s3cret-pw")
    try:
        with (
            pytest.raises(RegistrationError, match=r"registration with 127\.0\.0\.1:"),
            hardened_phone(None, kamailio=registrar, password="wrong"),
        ):
            pass
    finally:
        registrar.stop()
