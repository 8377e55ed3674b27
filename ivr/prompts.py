"""Recorded prompts: ``<dir>/<id>.wav`` (8 kHz, mono, 16-bit) plus ``manifest.json``.

The shipped defaults work on machines without espeak-ng. ``callcentre prompts build`` speaks a
flow's prompt texts with espeak-ng and converts them with sox; the manifest keeps a hash of each
text and voice so only changed prompts are rebuilt and stale recordings are detectable.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

MANIFEST = "manifest.json"
SAMPLE_RATE = 8000


class PromptBuildError(RuntimeError):
    """espeak-ng or sox is missing or failed; the message says which prompt and why."""


def text_digest(text: str, voice: str) -> str:
    return hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:16]


def read_manifest(directory: Path) -> dict[str, dict[str, str]]:
    path = directory / MANIFEST
    if not path.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def stale_prompts(prompts: Mapping[str, str], directory: Path) -> list[str]:
    """Prompt ids whose recording is missing or was made from a different text."""
    manifest = read_manifest(directory)
    stale = []
    for pid, text in prompts.items():
        entry = manifest.get(pid)
        wav = directory / f"{pid}.wav"
        if not wav.exists() or entry is None or entry.get("digest") != text_digest(text, entry.get("voice", "")):
            stale.append(pid)
    return stale


def build_prompts(prompts: Mapping[str, str], directory: Path, *, voice: str = "en-us",
                  force: bool = False) -> list[str]:
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        raise PromptBuildError("building prompts needs espeak-ng and sox (Debian: apt-get install espeak-ng sox)")
    directory.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(directory)
    todo = list(prompts) if force else [
        pid for pid in prompts
        if manifest.get(pid, {}).get("digest") != text_digest(prompts[pid], voice)
        or not (directory / f"{pid}.wav").exists()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for pid in todo:
            raw = Path(tmp) / f"{pid}.raw.wav"
            _run([espeak, "-v", voice, "-s", "150", "-w", str(raw), prompts[pid]], pid)
            _run([sox, str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
                  str(directory / f"{pid}.wav"), "norm", "-3"], pid)
            manifest[pid] = {"voice": voice, "digest": text_digest(prompts[pid], voice), "text": prompts[pid]}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                                      encoding="utf-8")
    return todo


def _run(command: list[str], pid: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise PromptBuildError(f"prompt {pid!r}: {Path(command[0]).name} failed: {result.stderr.strip()[:200]}")
