"""RFC 2617 Digest (MD5, with or without ``qop=auth``): the answer to a SIP 401/407 challenge.

One computation for the two places that answer challenges: the hardened pyVoIP client's REGISTER
(``telephony/pyvoip_patches/client.py``) and our own INVITE to a customer (``telephony/sip_callback.py``).
Each parses the challenge with its own message class and hands the parameters here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - MD5 is what RFC 2617 Digest specifies


def digest_header(
    status: int, params: Mapping[str, str], *, method: str, uri: str, username: str, password: str,
    cnonce: str | None = None,
) -> str:
    """``Authorization: Digest …`` for a 401, ``Proxy-Authorization: Digest …`` for a 407."""
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = f'username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "auth" in [q.strip() for q in str(params.get("qop", "")).split(",")]:
        cnonce = cnonce or uuid.uuid4().hex[:16]
        response = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        fields += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in params:
        fields += f', opaque="{params["opaque"]}"'
    name = "Authorization" if status == 401 else "Proxy-Authorization"
    return f'{name}: Digest {fields}, response="{response}"'
