"""A supervised AMI link: login, keepalive ``Ping``, reconnect with backoff, ordered event delivery.

The ``asterisk-ami`` client (with :mod:`telephony.asterisk_ami_patches`) reads the socket; this
module keeps the link alive and gives the backend three things:

* ``request(name, **keys)`` – send an action and wait for *its* response (matched by ``ActionID``,
  whatever else arrives in between). While the link is down it waits for the link to return, up to
  ``action_timeout``, instead of failing at once, so an action issued during a short outage still
  goes out after the reconnect.
* ``collect(name, **keys)`` – an action answered by an event list (``EventList: start`` …
  ``EventList: Complete``); the list's events are returned, not delivered as ordinary events.
* ``on_event`` – every other event, in arrival order, from one dispatcher thread (never the reader
  thread, so a handler may itself call ``request`` without deadlocking the link).

After every (re)login ``on_linked`` runs in the dispatcher thread *before* events of the new
connection: the backend resynchronises there (``CoreShowChannels``) because Asterisk does not
replay events that happened while no manager was connected.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asterisk.ami import Event, Response
from asterisk.ami.action import Action

from telephony.asterisk_ami_patches import LINK_LOST, ActionFuture, PatchedAMIClient

log = logging.getLogger(__name__)


class AmiError(Exception):
    """An AMI action failed; carries the action name and the manager's message."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"AMI {action} failed: {message}")
        self.action = action
        self.message = message


@dataclass
class _ListCollector:
    events: list[Event] = field(default_factory=list)
    complete: threading.Event = field(default_factory=threading.Event)


@dataclass
class LinkStats:
    logins: int = 0
    disconnects: int = 0
    pings: int = 0
    events: int = 0


class AmiLink:
    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        on_event: Callable[[Event], None],
        on_linked: Callable[[], None] | None = None,
        connect_timeout: float = 3.0,
        action_timeout: float = 5.0,
        ping_interval: float = 2.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self._username, self._secret = username, secret
        self._on_event = on_event
        self._on_linked = on_linked
        self.connect_timeout = connect_timeout
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = LinkStats()
        self._client: PatchedAMIClient | None = None
        self._linked = threading.Event()
        self._lost = threading.Event()
        self._stopping = threading.Event()
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lists: dict[str, _ListCollector] = {}
        self._lists_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.last_error: str = ""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        for target, name in ((self._supervise, "ami-supervisor"), (self._dispatch, "ami-dispatch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        client = self._client
        if client is not None and self._linked.is_set():
            try:
                client.send_action(Action("Logoff", {})).result(0.5)
            except OSError:
                pass
        self._drop()
        self._inbox.put(("stop", None))
        for thread in self._threads:
            thread.join(self.connect_timeout + 1)
        self._threads.clear()

    def wait_linked(self, timeout: float) -> bool:
        return self._linked.wait(timeout)

    @property
    def linked(self) -> bool:
        return self._linked.is_set()

    # -- actions ---------------------------------------------------------------------------------
    def send(self, name: str, fields: Mapping[str, str] | None = None, *,
             variables: Mapping[str, str] | None = None, **keys: str) -> ActionFuture:
        """Send an action once the link is up; the future resolves with its response.

        Keys come from ``fields`` and/or keyword arguments; ``variables`` become ``Variable:`` lines.
        """
        keys = {**(fields or {}), **keys}
        deadline = time.monotonic() + self.action_timeout
        while True:
            if not self._linked.wait(max(0.0, deadline - time.monotonic())):
                future = ActionFuture("-")
                future.set(Response("Error", {"Message": LINK_LOST}, []))
                return future
            client = self._client
            if client is None:
                continue
            future = client.send_action(Action(name, dict(keys), dict(variables or {})))
            return future

    def request(self, name: str, fields: Mapping[str, str] | None = None, *,
                variables: Mapping[str, str] | None = None, **keys: str) -> Response:
        """Send and wait for the response; raise :class:`AmiError` on ``Response: Error`` or no answer."""
        future = self.send(name, fields, variables=variables, **keys)
        response = future.result(self.action_timeout)
        if response is None:
            raise AmiError(name, "no response")
        if response.is_error():
            raise AmiError(name, response.keys.get("Message", "error"))
        return response

    def collect(self, name: str, **keys: str) -> list[Event]:
        """Run an event-list action and return its events (without the closing ``…Complete`` one)."""
        client = self._client
        if client is None or not self._linked.wait(self.action_timeout):
            raise AmiError(name, LINK_LOST)
        action_id = client.next_action_id()
        collector = _ListCollector()
        with self._lists_lock:
            self._lists[action_id] = collector
        try:
            response = client.send_action(Action(name, {**keys, "ActionID": action_id})).result(
                self.action_timeout
            )
            if response is None:
                raise AmiError(name, "no response")
            if response.is_error():
                raise AmiError(name, response.keys.get("Message", "error"))
            if response.keys.get("EventList", "").lower() != "start":
                return []
            if not collector.complete.wait(self.action_timeout):
                raise AmiError(name, "event list did not complete")
            return collector.events
        finally:
            with self._lists_lock:
                self._lists.pop(action_id, None)

    # -- internals -------------------------------------------------------------------------------
    def _on_client_event(self, event: Event, source: Any = None) -> None:
        """Reader thread: list members go to their collector, everything else to the inbox in order."""
        action_id = event.keys.get("ActionID")
        if action_id is not None:
            with self._lists_lock:
                collector = self._lists.get(action_id)
            if collector is not None:
                if event.keys.get("EventList", "").lower() == "complete":
                    collector.complete.set()
                else:
                    collector.events.append(event)
                return
        self._inbox.put(("event", event))

    def _on_client_disconnect(self, source: Any = None, error: Exception | None = None) -> None:
        if error is not None:
            self.last_error = type(error).__name__
        self._lost.set()

    def _drop(self) -> None:
        self._linked.clear()
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()

    def _login(self) -> PatchedAMIClient:
        # A fresh ActionID prefix per connection: a late answer meant for an old link can never match.
        client = PatchedAMIClient(self.host, self.port, timeout=self.connect_timeout,
                                  id_prefix=f"cc{self.stats.logins + 1}")
        client.add_event_listener(self._on_client_event)
        client.add_listener(on_disconnect=self._on_client_disconnect)
        self._lost.clear()
        client.connect()
        response = client.send_action(
            Action("Login", {"Username": self._username, "Secret": self._secret, "Events": "on"})
        ).result(self.connect_timeout)
        if response is None or response.is_error():
            message = "no response" if response is None else response.keys.get("Message", "error")
            client.disconnect()
            raise AmiError("Login", message)
        return client

    def _supervise(self) -> None:
        backoff = self.backoff_initial
        while not self._stopping.is_set():
            try:
                self._client = self._login()
            except (OSError, AmiError) as exc:
                self.last_error = str(exc) if isinstance(exc, AmiError) else type(exc).__name__
                log.warning("AMI login to %s:%s failed (%s); retry in %.1fs", self.host, self.port,
                            self.last_error, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = self.backoff_initial
            self.stats.logins += 1
            # Resync is queued ahead of any event of this connection: the dispatcher runs it first.
            self._inbox.put(("linked", None))
            self._linked.set()
            log.info("AMI linked to %s:%s", self.host, self.port)
            self._keepalive()
            self._drop()
            if not self._stopping.is_set():
                self.stats.disconnects += 1
                log.warning("AMI link to %s:%s lost; reconnecting", self.host, self.port)

    def _keepalive(self) -> None:
        """Ping every ``ping_interval``; a missing Pong or a closed socket ends this connection."""
        while not self._stopping.is_set():
            if self._lost.wait(self.ping_interval):
                return
            client = self._client
            if client is None:
                return
            self.stats.pings += 1
            response = client.send_action(Action("Ping", {})).result(self.action_timeout)
            if response is None or response.is_error():
                self.last_error = "ping unanswered"
                return

    def _dispatch(self) -> None:
        while True:
            kind, payload = self._inbox.get()
            if kind == "stop":
                return
            try:
                if kind == "linked":
                    if self._on_linked is not None:
                        self._on_linked()
                else:
                    self.stats.events += 1
                    self._on_event(payload)
            except Exception:
                log.exception("AMI %s handler failed", kind)
