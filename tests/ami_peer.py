"""A loopback AMI peer that speaks the Asterisk Manager Interface as documented (no Asterisk here).

What it reproduces from the Asterisk documentation (docs.asterisk.org, "AMI" and the per-action /
per-event reference pages):

* On connect the server sends one line ``Asterisk Call Manager/<version>`` (CRLF), then messages
  of ``Key: Value`` lines ended by an empty line (CRLF CRLF).
* ``Login`` (``Username``/``Secret``) → ``Response: Success`` / ``Message: Authentication
  accepted`` followed by ``Event: FullyBooted``; a wrong secret → ``Response: Error`` /
  ``Message: Authentication failed`` and the server closes the connection. Any other action
  before login → ``Response: Error`` / ``Message: Permission denied``.
* Every response carries the ``ActionID`` the client sent, so the client can correlate responses
  that arrive interleaved with events (and, here, out of order: see ``delay``).
* ``Ping`` → ``Response: Success`` with ``Ping: Pong`` and ``Timestamp``.
* List actions (``CoreShowChannels``) → ``Response: Success`` + ``EventList: start``, then one
  event per item carrying the same ``ActionID``, then ``…Complete`` with ``EventList: Complete``
  and ``ListItems: N``.
* ``Originate`` with ``Async: true`` → ``Response: Success`` / ``Message: Originate successfully
  queued``, later ``Event: OriginateResponse`` with the same ``ActionID`` and ``Response:
  Success|Failure`` and ``Reason`` (4 = answered, 3 = no answer, 5 = busy).
* ``Hangup`` → ``Response: Success`` then ``Event: Hangup`` for that channel.
* ``Logoff`` → ``Response: Goodbye`` and the server closes the connection.
* Unknown action → ``Response: Error`` / ``Message: Invalid/unknown command``.
* Events that happen while no manager is connected are not replayed on reconnect (Asterisk keeps
  no backlog): only channel *state* (``CoreShowChannels``) survives.
* A callback (``Originate`` into a context ending in ``-callback``, see ``callcentre asterisk config``):
  once the agent's channel is up the dialplan runs ``Dial(PJSIP/${CALLCENTRE_CALLBACK_NUMBER}@trunk,…)``,
  which the peer plays as Asterisk reports it (``callback_outcome``): ``Newchannel`` for the customer's
  channel, ``DialBegin`` (``Channel``/``Uniqueid`` = the agent's, ``DestChannel``/``DestUniqueid`` = the
  customer's, ``DialString``), ``Newstate`` Ringing, then either ``DialEnd`` ``DialStatus: ANSWER`` and a
  ``BridgeEnter`` per channel, or (``ring``) nothing more until the agent's channel is hung up (AMI
  ``Hangup``), which app_dial reports as ``DialEnd`` ``DialStatus: CANCEL`` and the customer channel's
  ``Hangup``; or ``DialEnd`` with ``BUSY``/``NOANSWER``/``CONGESTION``, the customer
  channel's ``Hangup`` with its Q.850 ``Cause`` (17 busy; 21 rejected, which Asterisk's
  ``ast_hangup_cause_to_dial_status`` reports as ``NOANSWER``; 16 after a ring timeout, Asterisk
  hanging the unanswered channel up itself; 34 congestion), then the agent's ``Hangup`` from the
  dialplan's ``Hangup()``. ``chanunavail``: no channel could be created, so no ``DialBegin``/``DialEnd``;
  ``Dial`` returns at once and the agent's leg is hung up.

The test controls the peer: ``emit`` an event, ``replay`` a fixture file of recorded traffic
(panoramisk style), ``drop_connections`` mid-call, ``pause`` accepting connections, add or remove
channels, and read the ``actions`` it received.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callcentre.bus import EventBus
from callcentre.settings import AsteriskSettings
from telephony.asterisk import AsteriskBackend

BANNER = "Asterisk Call Manager/7.0.3"
FIXTURES = Path(__file__).parent / "fixtures" / "ami"


def encode(message: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = message.items() if isinstance(message, dict) else message
    return ("".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n").encode()


def parse_fixture(path: Path) -> list[dict[str, str]]:
    """A fixture is AMI traffic as it appears on the wire: blocks of ``Key: Value`` separated by a blank line.

    Lines starting with ``#`` are comments; ``Event:`` blocks are what the server sends.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.rstrip("\r")
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


@dataclass
class PeerChannel:
    channel: str
    uniqueid: str
    linkedid: str
    state: str = "6"
    state_desc: str = "Up"
    context: str = "callcentre-in"
    exten: str = "1000"
    caller_num: str = ""
    application: str = "AGI"


@dataclass
class _Conn:
    sock: socket.socket
    logged_in: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, data: bytes) -> None:
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass


class AmiPeer:
    def __init__(self, username: str = "callcentre", secret: str = "s3cret") -> None:
        self.username, self.secret = username, secret
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self.port: int = self._server.getsockname()[1]
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._accepting = threading.Event()
        self._accepting.set()
        self.actions: list[dict[str, str]] = []
        self.channels: dict[str, PeerChannel] = {}
        self.delay: dict[str, float] = {}
        """Per action name: seconds to wait before responding (out-of-order responses)."""
        self.originate_outcome: str = "answer"
        """``answer``, ``noanswer``, ``busy``, or ``none`` (the test replays the events itself)."""
        self.callback_outcome: str = "answer"
        """The customer's side of a callback's ``Dial``: ``answer``, ``busy``, ``noanswer``, ``rejected``,
        ``congestion``, ``chanunavail``, ``ring`` (it rings until the agent's channel is hung up) or ``none``
        (nothing happens: the customer's phone rings on)."""
        self._ringing_dials: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str]]] = {}
        """Agent channel → (customer, Dest*, agent) keys of a ``ring`` callback whose customer still rings."""
        self.callback_channels: dict[str, str] = {}
        """Agent channel → customer channel of each callback ``Dial`` the peer played."""
        self.logins = 0
        self._seq = 1000
        self._threads: list[threading.Thread] = []
        thread = threading.Thread(target=self._accept_loop, name="ami-peer", daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- control ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self._server.close()
        for thread in self._threads:
            thread.join(2)
        self.drop_connections()

    def __enter__(self) -> AmiPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connected(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns if c.logged_in)

    def wait_logins(self, n: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logins >= n and self.connected() > 0:
                return True
            time.sleep(0.01)
        return False

    def drop_connections(self) -> None:
        """Close every manager connection at once, as a crashed or restarted Asterisk would."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.sock.close()

    def pause(self) -> None:
        """Refuse new connections (accept then close at once) until ``resume``."""
        self._accepting.clear()

    def resume(self) -> None:
        self._accepting.set()

    def emit(self, event: dict[str, str]) -> int:
        """Send one event to every logged-in manager; returns how many received it."""
        message = {"Event": event["Event"], "Privilege": "call,all", **{k: v for k, v in event.items() if k != "Event"}}
        self._track(message)
        data = encode(message)
        with self._lock:
            targets = [c for c in self._conns if c.logged_in]
        for conn in targets:
            conn.send(data)
        return len(targets)

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are, to every logged-in manager (malformed traffic tests)."""
        with self._lock:
            targets = [c for c in self._conns if c.logged_in]
        for conn in targets:
            conn.send(data)

    def replay(self, name: str) -> list[dict[str, str]]:
        """Send every event of ``tests/fixtures/ami/<name>`` in order."""
        events = [b for b in parse_fixture(FIXTURES / name) if "Event" in b]
        for event in events:
            self.emit(event)
        return events

    def add_channel(self, channel: PeerChannel) -> None:
        self.channels[channel.uniqueid] = channel

    def remove_channel(self, uniqueid: str) -> None:
        self.channels.pop(uniqueid, None)

    def actions_named(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action", "").lower() == name.lower()]

    # -- server ----------------------------------------------------------------------------------
    def live_channels(self) -> set[str]:
        """Names of the channels that are up now (safe while the peer's threads change them)."""
        with self._lock:
            return {c.channel for c in list(self.channels.values())}

    def _track(self, event: dict[str, str]) -> None:
        """Keep channel state as Asterisk would, so CoreShowChannels after a reconnect is truthful."""
        with self._lock:
            self._track_locked(event)

    def _track_locked(self, event: dict[str, str]) -> None:
        name = event["Event"]
        uid = event.get("Uniqueid", "")
        if name == "Newchannel" and uid:
            self.channels[uid] = PeerChannel(
                channel=event.get("Channel", ""), uniqueid=uid, linkedid=event.get("Linkedid", uid),
                state=event.get("ChannelState", "0"), state_desc=event.get("ChannelStateDesc", "Down"),
                context=event.get("Context", ""), exten=event.get("Exten", ""),
                caller_num=event.get("CallerIDNum", ""),
            )
        elif name == "Newstate" and uid in self.channels:
            self.channels[uid].state = event.get("ChannelState", "")
            self.channels[uid].state_desc = event.get("ChannelStateDesc", "")
        elif name == "Hangup":
            self.channels.pop(uid, None)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            if not self._accepting.is_set():
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            conn = _Conn(sock)
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), name="ami-peer-conn", daemon=True)
            thread.start()

    def _serve(self, conn: _Conn) -> None:
        conn.send((BANNER + "\r\n").encode())
        buffer = b""
        try:
            while not self._stop.is_set():
                chunk = conn.sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    raw, buffer = buffer.split(b"\r\n\r\n", 1)
                    action: dict[str, str] = {}
                    for line in raw.decode(errors="replace").split("\r\n"):
                        key, sep, value = line.partition(":")
                        if sep:
                            if key.strip() == "Variable" and "Variable" in action:
                                action["Variable"] += "," + value.strip()
                            else:
                                action[key.strip()] = value.strip()
                    if not self._handle(conn, action):
                        return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def _respond(self, conn: _Conn, action: dict[str, str], status: str, **keys: str) -> None:
        message = [("Response", status)]
        if "ActionID" in action:
            message.append(("ActionID", action["ActionID"]))
        message.extend(keys.items())
        delay = self.delay.get(action.get("Action", ""), 0.0)
        if delay:
            def later() -> None:
                time.sleep(delay)
                conn.send(encode(message))
            threading.Thread(target=later, daemon=True).start()
        else:
            conn.send(encode(message))

    def _handle(self, conn: _Conn, action: dict[str, str]) -> bool:
        name = action.get("Action", "")
        self.actions.append(action)
        lname = name.lower()
        if lname == "login":
            if action.get("Username") == self.username and action.get("Secret") == self.secret:
                conn.logged_in = True
                self.logins += 1
                self._respond(conn, action, "Success", Message="Authentication accepted")
                conn.send(encode({"Event": "FullyBooted", "Privilege": "system,all", "Status": "Fully Booted"}))
                return True
            self._respond(conn, action, "Error", Message="Authentication failed")
            return False
        if not conn.logged_in:
            self._respond(conn, action, "Error", Message="Permission denied")
            return True
        if lname == "ping":
            self._respond(conn, action, "Success", Ping="Pong", Timestamp=f"{time.time():.6f}")
        elif lname == "logoff":
            self._respond(conn, action, "Goodbye", Message="Thanks for all the fish.")
            return False
        elif lname == "coreshowchannels":
            self._core_show_channels(conn, action)
        elif lname == "originate":
            self._originate(conn, action)
        elif lname == "hangup":
            channel = action.get("Channel", "")
            found = next((c for c in self.channels.values() if c.channel == channel), None)
            if found is None:
                self._respond(conn, action, "Error", Message="No such channel")
            else:
                self._respond(conn, action, "Success", Message="Channel Hungup")
                ringing = self._ringing_dials.pop(channel, None)
                if ringing is not None:
                    # app_dial, its caller gone while dialling: DialEnd CANCEL, the outgoing channel hung up.
                    peer, dest, agent = ringing
                    self.emit({"Event": "DialEnd", **agent, **dest, "DialStatus": "CANCEL"})
                    self.emit({"Event": "Hangup", **peer, "Cause": "16", "Cause-txt": "Normal Clearing"})
                self.emit({"Event": "Hangup", "Channel": channel, "Uniqueid": found.uniqueid,
                           "Linkedid": found.linkedid, "Cause": "16", "Cause-txt": "Normal Clearing"})
        elif lname in {"redirect", "bridge", "blindtransfer", "atxfer", "mixmonitor", "pausemixmonitor",
                       "stopmixmonitor", "setvar"}:
            channel = action.get("Channel", action.get("Channel1", ""))
            if channel and not any(c.channel == channel for c in self.channels.values()):
                self._respond(conn, action, "Error", Message="No such channel")
            else:
                messages = {"redirect": "Redirect successful", "bridge": "Channels have been bridged",
                            "blindtransfer": "Transfer succeeded", "atxfer": "Atxfer successfully queued",
                            "mixmonitor": "", "pausemixmonitor": "", "stopmixmonitor": "", "setvar": ""}
                message = messages[lname]
                self._respond(conn, action, "Success", **({"Message": message} if message else {}))
        else:
            self._respond(conn, action, "Error", Message="Invalid/unknown command")
        return True

    def _core_show_channels(self, conn: _Conn, action: dict[str, str]) -> None:
        aid = action.get("ActionID", "")
        conn.send(encode([("Response", "Success"), ("ActionID", aid), ("EventList", "start"),
                          ("Message", "Channels will follow")]))
        channels = list(self.channels.values())
        for ch in channels:
            conn.send(encode([
                ("Event", "CoreShowChannel"), ("ActionID", aid), ("Channel", ch.channel),
                ("ChannelState", ch.state), ("ChannelStateDesc", ch.state_desc),
                ("CallerIDNum", ch.caller_num), ("Context", ch.context), ("Exten", ch.exten),
                ("Priority", "1"), ("Uniqueid", ch.uniqueid), ("Linkedid", ch.linkedid),
                ("Application", ch.application), ("Duration", "00:00:05"),
            ]))
        conn.send(encode([("Event", "CoreShowChannelsComplete"), ("ActionID", aid),
                          ("EventList", "Complete"), ("ListItems", str(len(channels)))]))

    def _next_uid(self) -> str:
        self._seq += 1
        return f"1700000000.{self._seq}"

    def _originate(self, conn: _Conn, action: dict[str, str]) -> None:
        aid = action.get("ActionID", "")
        self._respond(conn, action, "Success", Message="Originate successfully queued")
        outcome = self.originate_outcome
        if outcome == "none":
            return

        def later() -> None:
            time.sleep(0.05)
            tech = action.get("Channel", "")
            if outcome == "answer":
                uid = self._next_uid()
                channel = f"{tech}-0000{self._seq}"
                self.emit({"Event": "Newchannel", "Channel": channel, "ChannelState": "0",
                           "ChannelStateDesc": "Down", "Uniqueid": uid, "Linkedid": uid,
                           "Context": action.get("Context", ""), "Exten": action.get("Exten", "")})
                for var in filter(None, action.get("Variable", "").split(",")):
                    key, _, value = var.partition("=")
                    self.emit({"Event": "VarSet", "Channel": channel, "Uniqueid": uid, "Linkedid": uid,
                               "Variable": key, "Value": value})
                self.emit({"Event": "Newstate", "Channel": channel, "ChannelState": "6",
                           "ChannelStateDesc": "Up", "Uniqueid": uid, "Linkedid": uid})
                conn.send(encode([("Event", "OriginateResponse"), ("Privilege", "call,all"), ("ActionID", aid),
                                  ("Response", "Success"), ("Channel", channel), ("Context", action.get("Context", "")),
                                  ("Exten", action.get("Exten", "")), ("Reason", "4"), ("Uniqueid", uid)]))
                if action.get("Context", "").endswith("-callback"):
                    self._callback_dial(channel, uid, action)
            else:
                reason = "3" if outcome == "noanswer" else "5"
                conn.send(encode([("Event", "OriginateResponse"), ("Privilege", "call,all"), ("ActionID", aid),
                                  ("Response", "Failure"), ("Channel", tech), ("Context", action.get("Context", "")),
                                  ("Exten", action.get("Exten", "")), ("Reason", reason), ("Uniqueid", "<null>")]))

        threading.Thread(target=later, daemon=True).start()


    def _callback_dial(self, agent_channel: str, agent_uid: str, action: dict[str, str]) -> None:
        """The callback context's ``Dial`` of the customer, as Asterisk reports it (see the module docstring)."""
        outcome = self.callback_outcome
        variables = dict(v.partition("=")[::2] for v in filter(None, action.get("Variable", "").split(",")))
        agent = {"Channel": agent_channel, "Uniqueid": agent_uid, "Linkedid": agent_uid,
                 "Context": action.get("Context", ""), "Exten": "s"}
        if outcome == "none":
            return
        if outcome == "ring":
            # The customer's phone only rings; the Dial ends when the agent's channel is hung up (below).
            uid = self._next_uid()
            customer = f"PJSIP/trunk-0000{self._seq}"
            self.callback_channels[agent_channel] = customer
            self._ringing_dials[agent_channel] = ({"Channel": customer, "Uniqueid": uid, "Linkedid": agent_uid},
                                                  {"DestChannel": customer, "DestUniqueid": uid,
                                                   "DestLinkedid": agent_uid}, agent)
            peer = self._ringing_dials[agent_channel][0]
            self.emit({"Event": "Newchannel", **peer, "ChannelState": "0", "ChannelStateDesc": "Down",
                       "Context": "from-trunk", "Exten": "s"})
            self.emit({"Event": "DialBegin", **agent, **self._ringing_dials[agent_channel][1],
                       "DialString": f"{variables.get('CALLCENTRE_CALLBACK_NUMBER', '')}@trunk"})
            self.emit({"Event": "Newstate", **peer, "ChannelState": "5", "ChannelStateDesc": "Ringing"})
            return
        if outcome == "chanunavail":
            self.emit({"Event": "Hangup", **agent, "Cause": "16", "Cause-txt": "Normal Clearing"})
            return
        uid = self._next_uid()
        customer = f"PJSIP/trunk-0000{self._seq}"
        self.callback_channels[agent_channel] = customer
        peer = {"Channel": customer, "Uniqueid": uid, "Linkedid": agent_uid}
        dest = {"DestChannel": customer, "DestUniqueid": uid, "DestLinkedid": agent_uid}
        self.emit({"Event": "Newchannel", **peer, "ChannelState": "0", "ChannelStateDesc": "Down",
                   "Context": "from-trunk", "Exten": "s"})
        self.emit({"Event": "DialBegin", **agent, **dest,
                   "DialString": f"{variables.get('CALLCENTRE_CALLBACK_NUMBER', '')}@trunk"})
        self.emit({"Event": "Newstate", **peer, "ChannelState": "5", "ChannelStateDesc": "Ringing"})
        if outcome == "answer":
            self.emit({"Event": "Newstate", **peer, "ChannelState": "6", "ChannelStateDesc": "Up"})
            self.emit({"Event": "DialEnd", **agent, **dest, "DialStatus": "ANSWER"})
            bridge = {"BridgeUniqueid": f"bridge-{agent_uid}", "BridgeType": "basic",
                      "BridgeTechnology": "simple_bridge"}
            self.emit({"Event": "BridgeEnter", **bridge, **agent, "BridgeNumChannels": "1"})
            self.emit({"Event": "BridgeEnter", **bridge, **peer, "BridgeNumChannels": "2"})
            return
        status, cause, text = {
            "busy": ("BUSY", "17", "User busy"), "noanswer": ("NOANSWER", "16", "Normal Clearing"),
            "rejected": ("NOANSWER", "21", "Call Rejected"),
            "congestion": ("CONGESTION", "34", "Circuit/channel congestion"),
        }[outcome]
        self.emit({"Event": "DialEnd", **agent, **dest, "DialStatus": status})
        self.emit({"Event": "Hangup", **peer, "Cause": cause, "Cause-txt": text})
        self.emit({"Event": "Hangup", **agent, "Cause": "16", "Cause-txt": "Normal Clearing"})


@contextlib.contextmanager
def running_peer(**kwargs: str) -> Iterator[AmiPeer]:
    peer = AmiPeer(**kwargs)
    try:
        yield peer
    finally:
        peer.close()


@contextlib.contextmanager
def linked_backend(peer: AmiPeer, bus: EventBus) -> Iterator[AsteriskBackend]:
    """An :class:`AsteriskBackend` logged in to ``peer`` (FastAGI on a free port, 0.5 s pings), stopped after."""
    settings = AsteriskSettings(ami_host="127.0.0.1", ami_port=peer.port, ami_username=peer.username,
                                ami_secret=peer.secret, agi_host="127.0.0.1", agi_port=0, ping_interval=0.5)
    backend = AsteriskBackend(settings, action_timeout=3.0)
    backend.start(bus)
    try:
        assert backend.link is not None and backend.link.wait_linked(5)
        yield backend
    finally:
        backend.stop()
