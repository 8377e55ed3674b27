"""Fixes for defects of ``asterisk-ami`` 0.1.7, made in our code (site-packages stays untouched).

Pinned to 0.1.7: importing this module with another version raises ``ImportError`` so an upgrade is
looked at on purpose rather than silently running against patches written for other code.

Defects fixed here (all seen in the 0.1.7 source):

1. ``timeout`` is also the socket *read* timeout. With the default 3 s the reader thread gets
   ``socket.timeout`` after 3 idle seconds, reports a disconnect and dies; every later event is lost
   while the socket still looks open. We keep ``timeout`` for connecting and for waiting on
   responses only, and read with a blocking socket (TCP keepalive on, plus our own ``Ping``).
2. ``FutureResponse.set_response`` calls ``traceback.print_exc()`` without importing ``traceback``:
   a callback that raises kills the reader thread with ``NameError``. We run callbacks ourselves
   and log failures.
3. ``next_action_id`` and ``send`` are not thread-safe and ``send`` uses ``socket.send`` (may
   write part of an action). We lock both and use ``sendall``.
4. Pending futures are never resolved when the link drops; waiters sleep their whole timeout and
   get ``None``. We resolve them at once with an ``Error`` response saying the link was lost.
5. A wrong banner raises a bare ``Exception`` in the reader thread. We report it as a disconnect.
6. ``FutureResponse`` uses ``Condition.notifyAll`` (deprecated). Our futures use ``notify_all``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any

from asterisk.ami import AMIClient, Response
from asterisk.ami.action import Action

log = logging.getLogger(__name__)

PINNED_VERSION = "0.1.7"

_installed = metadata.version("asterisk-ami")
if _installed != PINNED_VERSION:  # pragma: no cover - only on a mismatched install
    raise ImportError(
        f"telephony.asterisk_ami_patches is written for asterisk-ami {PINNED_VERSION}, found {_installed}; "
        "re-check the defects listed in this module before changing the pin"
    )

LINK_LOST = "link lost"


def link_lost_response(action_id: str) -> Response:
    return Response("Error", {"ActionID": action_id, "Message": LINK_LOST}, [])


class ActionFuture:
    """A response that will arrive; ``result(timeout)`` waits for it (``None`` if it never came)."""

    def __init__(self, action_id: str, callback: Callable[[Response], None] | None = None) -> None:
        self.action_id = action_id
        self._callback = callback
        self._done = threading.Condition()
        self._response: Response | None = None

    def set(self, response: Response) -> None:
        with self._done:
            if self._response is not None:
                return
            self._response = response
            self._done.notify_all()
        if self._callback is not None:
            try:
                self._callback(response)
            except Exception:
                log.exception("AMI response callback failed (action %s)", self.action_id)

    def result(self, timeout: float | None) -> Response | None:
        with self._done:
            if self._response is None:
                self._done.wait(timeout)
            return self._response

    @property
    def response(self) -> Response | None:
        """Compatibility with the library's ``FutureResponse.response`` (waits without limit)."""
        return self.result(None)

    def done(self) -> bool:
        return self._response is not None


class PatchedAMIClient(AMIClient):  # type: ignore[misc]
    """``AMIClient`` with the defects listed in the module docstring fixed."""

    def __init__(self, address: str = "127.0.0.1", port: int = 5038, *, timeout: float = 3.0,
                 id_prefix: str = "cc", **kwargs: Any) -> None:
        super().__init__(address=address, port=port, timeout=timeout, buffer_size=2**16, **kwargs)
        self._send_lock = threading.Lock()
        self._id_lock = threading.Lock()
        self._id_prefix = id_prefix
        self._futures: dict[str, ActionFuture] = {}
        self.banner_version: str | None = None

    def next_action_id(self) -> str:
        with self._id_lock:
            self._action_counter += 1
            return f"{self._id_prefix}-{self._action_counter}"

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self._port), timeout=self._timeout)
        # Defect 1: block on reads; idleness is not an error. Keepalive detects a dead peer at TCP
        # level and our Ping at AMI level.
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._socket = sock
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self.listen, name="ami-reader", daemon=True)
        self._thread.start()

    def send_action(self, action: Action, callback: Callable[[Response], None] | None = None) -> ActionFuture:
        action_id = action.keys.get("ActionID") or self.next_action_id()
        action.keys["ActionID"] = action_id
        future = ActionFuture(action_id, callback)
        self._futures[action_id] = future
        self._fire_on_action(action=action)
        try:
            self.send(action)
        except OSError:
            self._futures.pop(action_id, None)
            future.set(link_lost_response(action_id))
        return future

    def send(self, pack: Any) -> None:
        data = (str(pack) + "\r\n").encode(self.encoding)
        with self._send_lock:
            if self._socket is None:
                raise OSError("AMI socket is not connected")
            self._socket.sendall(data)

    def listen(self) -> None:
        packs = self._next_pack()
        error: Exception | None = None
        try:
            banner = next(packs)
            match = AMIClient.asterisk_start_regex.match(banner)
            if not match:
                raise ConnectionError("peer did not send an 'Asterisk Call Manager/x.y' banner")
            self.banner_version = match.group("version")
            self._ami_version = self.banner_version
            self._fire_on_connect()
            while not self.finished.is_set():
                self.fire_recv_pack(next(packs))
        except StopIteration:
            error = None
        except Exception as exc:  # socket errors, parse errors: the link is gone either way
            error = exc
        finally:
            self.finished.set()
            self._fail_pending()
            try:
                self._socket.close()
            except OSError:
                pass
        self._fire_on_disconnect(error=error)

    def _fail_pending(self) -> None:
        pending, self._futures = self._futures, {}
        for action_id, future in pending.items():
            future.set(link_lost_response(action_id))

    def fire_recv_reponse(self, response: Response) -> None:
        self._fire_on_response(response=response)
        if response.status.lower() == "goodbye":
            self.finished.set()
        action_id = response.keys.get("ActionID")
        if action_id is None:
            return
        future = self._futures.pop(action_id, None)
        if future is not None:
            future.set(response)

    def disconnect(self) -> None:
        if self.finished is not None:
            self.finished.set()
        sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self._timeout)
