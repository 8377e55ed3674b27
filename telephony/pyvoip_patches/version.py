"""The pin: every fix in this package was written against pyVoIP 1.6.8 and only that release.

The fixes subclass pyVoIP's classes and rely on their attribute names and call order, so a
different release could silently undo a fix. Importing the package with any other version
raises :class:`UnsupportedPyVoIPVersion` instead of running half-patched.

This module also owns the import-order trap (DESIGN.md §5, defect 9): in a fresh interpreter
``import pyVoIP.SIP`` fails with a circular-import error, because ``pyVoIP/SIP.py`` imports
``pyVoIP.VoIP.status``, whose package ``__init__`` imports ``pyVoIP.VoIP.VoIP``, which imports the
half-initialised ``pyVoIP.SIP``. Importing ``pyVoIP.VoIP`` first initialises the modules in an
order that works; :func:`import_pyvoip` does exactly that and everything here goes through it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PINNED_VERSION = "1.6.8"


class UnsupportedPyVoIPVersion(RuntimeError):
    """The installed pyVoIP is not the release these fixes were written for."""

    def __init__(self, found: str) -> None:
        super().__init__(
            f"telephony.pyvoip_patches is written for pyVoIP=={PINNED_VERSION} but pyVoIP {found} is "
            f"installed; install pyVoIP=={PINNED_VERSION} (see setup.py) or re-check every fix in "
            "docs/pyvoip-patches.md against the new release before changing the pin"
        )
        self.found = found


def require_pinned_version(found: str | None = None) -> None:
    """Raise :class:`UnsupportedPyVoIPVersion` unless pyVoIP (or ``found``) is the pinned release."""
    if found is None:
        import pyVoIP

        found = str(pyVoIP.__version__)
    if found != PINNED_VERSION:
        raise UnsupportedPyVoIPVersion(found)


def import_pyvoip() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import ``pyVoIP.VoIP``, ``pyVoIP.SIP`` and ``pyVoIP.RTP`` in the one order that works."""
    voip = importlib.import_module("pyVoIP.VoIP")  # first: see the module docstring
    sip = importlib.import_module("pyVoIP.SIP")
    rtp = importlib.import_module("pyVoIP.RTP")
    return voip, sip, rtp
