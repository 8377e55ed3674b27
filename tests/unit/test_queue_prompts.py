"""The queue's callback offer says the queue's own key, from texts (text-to-speech backends) and from
the shipped recordings (WAV backends): a fixed "… press" recording plus one recording per DTMF key."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from ivr.prompts import read_manifest, stale_prompts
from routing import queue_experience as qx

PROMPTS = Path(__file__).resolve().parents[2] / "ivr" / "prompts"
LONG_WAIT = qx.WaitEstimate(seconds=400, reliable=True, cv=0.3, why="")
SPOKEN = {"*": "star", "#": "hash"}


def _offer(key: str) -> qx.Announcement:
    return qx.announcement(4, LONG_WAIT, qx.QueueRules("billing", callback_offer_after=60, callback_key=key))


def test_callback_offer_for_key_5_says_5_in_ids_texts_and_recordings() -> None:
    said = _offer("5")
    assert said.offers_callback
    assert said.prompt_ids[-2:] == ("queue_callback_offer", "key_5")
    assert " ".join(said.texts[-2:]) == "To keep your place and be called back instead, press 5."
    manifest = read_manifest(PROMPTS)
    assert manifest["key_5"]["text"] == "5." and "1" not in manifest["queue_callback_offer"]["text"]
    for pid in said.prompt_ids:
        assert (PROMPTS / f"{pid}.wav").is_file(), pid
    assert stale_prompts(dict(zip(said.prompt_ids, said.texts)), PROMPTS) == []


@pytest.mark.parametrize("key", list("0123456789*#"))
def test_every_configurable_key_has_a_prompt_and_a_current_recording(key: str) -> None:
    said = _offer(key)
    pid = said.prompt_ids[-1]
    assert pid == qx.key_prompt(key) and pid in qx.QUEUE_PROMPTS
    assert said.texts[-1].rstrip(".") == SPOKEN.get(key, key)
    assert stale_prompts({pid: qx.QUEUE_PROMPTS[pid]}, PROMPTS) == []
    with wave.open(str(PROMPTS / f"{pid}.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() > 8000 * 0.3


def test_no_offer_means_no_key_prompt_and_bad_keys_are_refused() -> None:
    quiet = qx.announcement(4, LONG_WAIT, qx.QueueRules("billing", callback_offer_after=None, callback_key="5"))
    assert not quiet.offers_callback
    assert not any(pid.startswith("key_") or pid == "queue_callback_offer" for pid in quiet.prompt_ids)
    for bad in ("", "12", "a", "+"):
        with pytest.raises(ValueError, match="DTMF"):
            qx.key_prompt(bad)
