"""pyVoIP 1.6.8, hardened: fixes for the defects listed in DESIGN.md §5, by subclassing.

Nothing in site-packages is edited and nothing is monkey-patched globally: the endpoint
instantiates :class:`HardenedVoIPPhone` (which uses :class:`HardenedSIPClient`,
:class:`HardenedSIPMessage` and :class:`HardenedRTPClient`) instead of the stock classes, and
the stock classes keep their stock behaviour (the tests run both side by side).

Importing this package refuses any pyVoIP other than 1.6.8 (:class:`UnsupportedPyVoIPVersion`)
and imports pyVoIP's modules in the one order that works (defect 9). Every defect, its symptom on
stock, the fix and the test proving it are listed in ``docs/pyvoip-patches.md``.
"""

from telephony.pyvoip_patches.version import (
    PINNED_VERSION,
    UnsupportedPyVoIPVersion,
    import_pyvoip,
    require_pinned_version,
)

require_pinned_version()
import_pyvoip()

from telephony.pyvoip_patches.client import HardenedSIPClient, RegistrationError  # noqa: E402
from telephony.pyvoip_patches.message import HardenedSIPMessage, uri_host_port, uri_user  # noqa: E402
from telephony.pyvoip_patches.phone import (  # noqa: E402
    CallState,
    HardenedVoIPCall,
    HardenedVoIPPhone,
    InvalidStateError,
    NoPortsAvailableError,
)
from telephony.pyvoip_patches.rtp import BoundedAudioBuffer, HardenedRTPClient, OutboundAudioQueue  # noqa: E402
from telephony.pyvoip_patches.sdp import NegotiatedAudio, negotiate  # noqa: E402

__all__ = [
    "PINNED_VERSION",
    "BoundedAudioBuffer",
    "CallState",
    "HardenedRTPClient",
    "HardenedSIPClient",
    "HardenedSIPMessage",
    "HardenedVoIPCall",
    "HardenedVoIPPhone",
    "InvalidStateError",
    "NegotiatedAudio",
    "NoPortsAvailableError",
    "OutboundAudioQueue",
    "RegistrationError",
    "UnsupportedPyVoIPVersion",
    "import_pyvoip",
    "negotiate",
    "require_pinned_version",
    "uri_host_port",
    "uri_user",
]
