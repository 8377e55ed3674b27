"""Defect 9 (import order) and the version pin, in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest

from telephony.pyvoip_patches import PINNED_VERSION, UnsupportedPyVoIPVersion, require_pinned_version


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_stock_import_of_pyvoip_sip_first_fails() -> None:
    result = run_python("import pyVoIP.SIP")
    assert result.returncode != 0
    assert "partially initialized module 'pyVoIP.SIP'" in result.stderr


def test_importing_the_patches_first_makes_pyvoip_sip_importable() -> None:
    result = run_python(
        "import telephony.pyvoip_patches\n"
        "import pyVoIP.SIP, pyVoIP.RTP, pyVoIP.VoIP\n"
        "print(pyVoIP.SIP.SIPClient.__name__, pyVoIP.__version__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SIPClient", PINNED_VERSION]


def test_the_pin_is_the_installed_version() -> None:
    require_pinned_version()  # pyVoIP 1.6.8 is installed: no error


@pytest.mark.parametrize("found", ["1.6.7", "1.6.9", "2.0.0", ""])
def test_other_versions_are_refused_with_a_clear_error(found: str) -> None:
    with pytest.raises(UnsupportedPyVoIPVersion, match=r"written for pyVoIP==1\.6\.8") as info:
        require_pinned_version(found)
    assert info.value.found == found


def test_importing_the_package_under_another_version_fails() -> None:
    result = run_python("import pyVoIP\npyVoIP.__version__ = '1.7.0'\nimport telephony.pyvoip_patches")
    assert result.returncode != 0
    assert "UnsupportedPyVoIPVersion" in result.stderr and "1.7.0" in result.stderr
