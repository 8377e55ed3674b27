"""A tolerant SIP message parser with pyVoIP's ``SIPMessage`` shape (defects 4 and "malformed SIP").

Stock 1.6.8 ``SIPMessage``:

* crashes on an ``a=rtpmap``/``a=fmtp`` whose payload type is not on the ``m=`` line (the lookup
  leaves ``index`` unbound, or points at the wrong media line) — the INVITE is silently dropped;
* crashes on ``m=`` protocols it does not know (``RTP/SAVPF``), on values containing ``:`` or ``=``,
  on header lines without ``": "``, on compact header names (``v:``, ``f:``, ``i:`` …), on ``tel:``
  URIs, and on any method other than INVITE/ACK/BYE/CANCEL (so OPTIONS cannot even be answered);
* keeps only the first ``Record-Route`` line, so a correct route set cannot be built.

:class:`HardenedSIPMessage` keeps the attributes pyVoIP's phone/call code reads (``type``,
``method``, ``status``, ``headers`` with the same dict shapes, ``body`` with ``c``/``m`` lists) and
adds what a correct UA needs: ``uri``, ``status_code``, ``source`` (the datagram's sender),
``via_values`` (raw Via values, in order) and ``record_route``. Anything it cannot make sense of
raises ``SIPParseError`` with a short reason, which the client turns into ``400 Bad Request``.
"""

from __future__ import annotations

import re
from typing import Any

from telephony.pyvoip_patches.version import import_pyvoip

_voip, _sip, _rtp = import_pyvoip()
SIPMessage = _sip.SIPMessage
SIPMessageType = _sip.SIPMessageType
SIPParseError = _sip.SIPParseError
SIPStatus = _sip.SIPStatus
RTPProtocol = _rtp.RTPProtocol

_COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "e": "Content-Encoding",
    "s": "Subject",
    "o": "Event",
    "r": "Refer-To",
}
_KNOWN = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Content-Encoding",
    "Max-Forwards",
    "Record-Route",
    "Route",
    "Allow",
    "Supported",
    "Require",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Authorization",
    "Proxy-Authorization",
    "Expires",
    "User-Agent",
    "Server",
    "Subject",
    "Event",
    "Refer-To",
]
_CANONICAL = {name.lower(): name for name in _KNOWN}
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_SPLIT_COMMAS = re.compile(r",(?=(?:[^\"<>]|\"[^\"]*\"|<[^>]*>)*$)")
_AUTH_MATCH = re.compile(r'(\w+)=("[^",]+"|[^ \t,]+)')
_TAG = re.compile(r";\s*tag=([^;>\s]+)", re.IGNORECASE)


class VersionNotSupported(SIPParseError):  # type: ignore[misc, valid-type]
    """The request is well formed but speaks another SIP version (answered with 505)."""


def canonical_header(name: str) -> str:
    name = name.strip()
    if len(name) == 1 and name.lower() in _COMPACT:
        return _COMPACT[name.lower()]
    return _CANONICAL.get(name.lower(), name)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and ``<>``."""
    return [part.strip() for part in _SPLIT_COMMAS.split(value) if part.strip()]


def parse_via(value: str) -> dict[str, Any]:
    """One Via value → pyVoIP's dict shape: ``type``, ``address`` (host, port str), parameters."""
    sent_protocol, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if not sent_protocol.upper().startswith("SIP/2.0/") or not rest:
        raise SIPParseError("malformed Via")
    sent_by, *params = [p.strip() for p in rest.split(";")]
    if sent_by.startswith("["):
        host, _, tail = sent_by[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else "5060"
    else:
        host, _, port = sent_by.partition(":")
        port = port or "5060"
    if not host or not port.isdigit():
        raise SIPParseError("malformed Via sent-by")
    via: dict[str, Any] = {"type": sent_protocol, "address": (host, port)}
    for param in params:
        if not param:
            continue
        key, eq, val = param.partition("=")
        via[key.strip()] = val.strip() if eq else None
    return via


def parse_name_addr(value: str) -> dict[str, Any]:
    """From/To value → pyVoIP's dict shape (raw without tag, tag, address, number, caller, host)."""
    value = value.strip()
    if ">" in value:
        head, params = value[: value.rfind(">") + 1], value[value.rfind(">") + 1 :]
    else:
        # Without <>, every ;parameter belongs to the header, not the URI (RFC 3261 20.10).
        head = value.split(";")[0]
        params = value[len(head) :]
    tag_match = _TAG.search(params)
    tag = tag_match.group(1) if tag_match else ""
    raw = (head + _TAG.sub("", params)).strip()
    if "<" in head:
        caller = head[: head.index("<")].strip().strip('"').strip("'")
        uri = head[head.index("<") + 1 : head.rfind(">")] if ">" in head else head[head.index("<") + 1 :]
    else:
        caller = ""
        uri = head
    address = re.sub(r"^(sips?|tel):", "", uri.strip(), flags=re.IGNORECASE)
    if not address:
        raise SIPParseError("empty From/To URI")
    address_no_params = address.split(";")[0]
    if "@" in address_no_params:
        number, host = address_no_params.split("@", 1)
    else:
        number, host = None, address_no_params
    return {"raw": raw, "tag": tag, "address": address, "number": number, "caller": caller, "host": host}


def uri_user(uri: str) -> str | None:
    """The user part of a ``sip:user@host`` URI (the dialled number), or None."""
    bare = re.sub(r"^(sips?|tel):", "", uri.strip().strip("<>"), flags=re.IGNORECASE).split(";")[0]
    return bare.split("@", 1)[0] if "@" in bare else None


def uri_host_port(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """Host and port of a SIP URI such as ``<sip:1000@127.0.0.1:5070;transport=udp>``."""
    bare = re.sub(r"^(sips?):", "", uri.strip().strip("<>"), flags=re.IGNORECASE)
    hostport = bare.split(";")[0].split("?")[0]
    if "@" in hostport:
        hostport = hostport.split("@", 1)[1]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    if not host:
        raise SIPParseError("URI without host")
    return host, int(port) if port.isdigit() else default_port


class HardenedSIPMessage(SIPMessage):  # type: ignore[misc, valid-type]
    """A SIP message parsed tolerantly; see the module docstring."""

    def __init__(self, data: bytes, source: tuple[str, int] | None = None) -> None:
        # Not calling SIPMessage.__init__: it would run the stock parser.
        self.SIPCompatibleVersions = ["SIP/2.0"]
        self.SIPCompatibleMethods = ["INVITE", "ACK", "BYE", "CANCEL"]
        self.heading = b""
        self.type: Any = None
        self.status = SIPStatus(491)
        self.status_code = 0
        self.reason = ""
        self.method = ""
        self.uri = ""
        self.version = ""
        self.headers: dict[str, Any] = {"Via": []}
        self.body: dict[str, Any] = {}
        self.authentication: dict[str, str] = {}
        self.raw = data
        self.source = source
        self.header_lines: list[tuple[str, str]] = []
        self.via_values: list[str] = []
        self.record_route: list[str] = []
        self.auth_match = _AUTH_MATCH
        self.parse(data)

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, data: bytes) -> None:
        head_bytes, sep, body_bytes = data.partition(b"\r\n\r\n")
        if not sep:
            head_bytes, sep, body_bytes = data.partition(b"\n\n")
        try:
            head = head_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SIPParseError("headers are not UTF-8") from exc
        lines = head.replace("\r\n", "\n").split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)  # RFC 3261 7.5: ignore CRLFs before the start line
        if not lines:
            raise SIPParseError("empty message")
        self.heading = lines[0].encode("utf-8")
        self._parse_start_line(lines[0].strip())
        self._parse_header_lines(lines[1:])
        self._parse_headers()
        length = self.headers.get("Content-Length")
        if isinstance(length, int):
            if length > len(body_bytes):
                raise SIPParseError("body shorter than Content-Length")
            body_bytes = body_bytes[:length]
        self._parse_body(body_bytes)

    def _parse_start_line(self, line: str) -> None:
        parts = line.split(" ", 2)
        if len(parts) < 3:
            raise SIPParseError("malformed start line")
        if parts[0].upper().startswith("SIP/"):
            if parts[0] not in self.SIPCompatibleVersions:
                raise SIPParseError("unsupported SIP version in response")
            if not parts[1].isdigit() or not 100 <= int(parts[1]) <= 699:
                raise SIPParseError("malformed status code")
            self.type = SIPMessageType.RESPONSE
            self.version = parts[0]
            self.status_code = int(parts[1])
            self.reason = parts[2]
            try:
                self.status = SIPStatus(self.status_code)
            except ValueError:
                # Unknown codes are treated as the x00 of their class (RFC 3261 8.1.3.2).
                self.status = SIPStatus(self.status_code // 100 * 100)
            return
        method, uri, version = parts
        if not _TOKEN.match(method) or not uri:
            raise SIPParseError("malformed request line")
        self.type = SIPMessageType.MESSAGE
        self.method = method
        self.uri = uri
        self.version = version.strip()
        if self.version not in self.SIPCompatibleVersions:
            raise VersionNotSupported(f"SIP Version {self.version} not compatible.")

    def _parse_header_lines(self, lines: list[str]) -> None:
        for line in lines:
            if not line.strip():
                continue
            if line[0] in " \t":
                if not self.header_lines:
                    raise SIPParseError("continuation line before any header")
                name, value = self.header_lines[-1]
                self.header_lines[-1] = (name, value + " " + line.strip())
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip() or " " in name.strip():
                raise SIPParseError("malformed header line")
            self.header_lines.append((canonical_header(name), value.strip()))

    def _parse_headers(self) -> None:
        seen: dict[str, str] = {}
        for name, value in self.header_lines:
            if name == "Via":
                self.via_values.extend(split_list(value))
            elif name == "Record-Route":
                self.record_route.extend(split_list(value))
            elif name not in seen:
                seen[name] = value
        if self.type == SIPMessageType.MESSAGE or self.type == SIPMessageType.RESPONSE:
            missing = [h for h in _MANDATORY if h not in seen and not (h == "Via" and self.via_values)]
            if missing:
                raise SIPParseError(f"missing {', '.join(missing)}")
        try:
            self.headers["Via"] = [parse_via(v) for v in self.via_values]
            for name, value in seen.items():
                if name in ("From", "To"):
                    self.headers[name] = parse_name_addr(value)
                elif name == "CSeq":
                    number, _, method = value.partition(" ")
                    if not number.isdigit() or not method.strip():
                        raise SIPParseError("malformed CSeq")
                    self.headers[name] = {"check": number, "method": method.strip()}
                elif name == "Content-Length":
                    if not value.isdigit():
                        raise SIPParseError("malformed Content-Length")
                    self.headers[name] = int(value)
                elif name in ("WWW-Authenticate", "Proxy-Authenticate", "Authorization"):
                    params = {k: v.strip('"') for k, v in _AUTH_MATCH.findall(value.replace("Digest ", ""))}
                    self.headers[name] = params
                    self.authentication = params
                elif name in ("Allow", "Supported"):
                    self.headers[name] = [v.strip() for v in value.split(",")]
                else:
                    self.headers[name] = value
        except SIPParseError:
            raise
        except (IndexError, ValueError) as exc:
            raise SIPParseError("malformed header value") from exc
        if self.record_route:
            self.headers["Record-Route"] = ", ".join(self.record_route)
        if not self.headers["Call-ID"]:
            raise SIPParseError("empty Call-ID")

    def _parse_body(self, body: bytes) -> None:
        if not body.strip():
            return
        content_type = str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()
        if content_type != "application/sdp":
            self.body["raw"] = body
            return
        if "Content-Encoding" in self.headers:
            raise SIPParseError("encoded SDP is not supported")
        self.headers["Content-Type"] = "application/sdp"
        try:
            text = body.decode("utf-8")
            for line in text.replace("\r\n", "\n").split("\n"):
                if not line.strip():
                    continue
                key, eq, value = line.partition("=")
                if not eq or len(key) != 1:
                    raise SIPParseError("malformed SDP line")
                self.parse_body(key, value.strip())
        except SIPParseError:
            raise
        except (UnicodeDecodeError, IndexError, ValueError, KeyError) as exc:
            raise SIPParseError("malformed SDP") from exc

    def parse_body(self, header: str, data: str) -> None:
        """SDP lines: ``m=`` and ``a=rtpmap``/``a=fmtp`` tolerantly; the rest the stock way."""
        if header == "m":
            fields = data.split()
            if len(fields) < 4:
                raise SIPParseError("malformed m= line")
            port_text, _, count_text = fields[1].partition("/")
            try:
                protocol: Any = RTPProtocol(fields[2])
            except ValueError:
                protocol = None  # e.g. RTP/SAVPF: parsed, then refused by negotiation (488)
            methods = fields[3:]
            self.body.setdefault("m", []).append(
                {
                    "type": fields[0],
                    "port": int(port_text),
                    "port_count": int(count_text) if count_text else 1,
                    "protocol": protocol,
                    "methods": methods,
                    "attributes": {m: {} for m in methods},
                }
            )
            return
        if header == "a":
            attribute, colon, value = data.partition(":")
            if colon and attribute in ("rtpmap", "fmtp"):
                media = self.body.get("m")
                pt, _, rest = value.strip().partition(" ")
                # The fix for defect 4: an attribute for a payload type that the current m= line
                # does not list (or one before any m= line) is ignored, as RFC 4566 allows.
                if not media or pt not in media[-1]["attributes"]:
                    return
                if attribute == "rtpmap":
                    parts = re.split(r"/", rest.strip())
                    media[-1]["attributes"][pt]["rtpmap"] = {
                        "id": pt,
                        "name": parts[0],
                        "frequency": parts[1] if len(parts) > 1 else "8000",
                        "encoding": parts[2] if len(parts) > 2 else None,
                    }
                else:
                    media[-1]["attributes"][pt]["fmtp"] = {"id": pt, "settings": rest.split()}
                return
            if colon:
                self.body.setdefault("a", {})[attribute] = value
                return
        super().parse_body(header, data)
