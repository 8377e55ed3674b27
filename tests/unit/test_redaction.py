"""Card-like digit runs and PINs never reach a stored transcript, in digits or in Korean words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recordings.redaction import REDACTED, digit_count, redact_text, redact_words

SINO = ["공", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("제 카드 번호는 4111 1111 1111 1111 입니다", "4111"),
        ("card 4111-1111-1111-1111 thanks", "1111"),
        ("번호는 5500000000000004 입니다", "5500000000000004"),
        ("비밀번호는 일 이 삼 사 입니다", "일 이 삼 사"),
        ("비밀번호 일이삼사", "일이삼사"),
        ("카드 번호 사 오 육 칠 팔 구 공 일 이 삼 사 오 육 칠 팔 구", "팔 구 공"),
        ("핀 번호 하나 둘 셋 넷", "하나 둘"),
        ("my pin is one two three four ok", "two three"),
        ("PIN 7 3", "7 3"),
    ],
)
def test_secret_runs_are_redacted(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "오늘 이 요금이 이상해요 3 월에",
        "네 네 네 네 감사합니다",
        "인터넷이 자꾸 끊어져요",
        "이번 달 요금 2 만 원",
    ],
)
def test_ordinary_speech_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_short_digit_run_after_keyword_only() -> None:
    assert redact_text("3 월 7 일") == "3 월 7 일"
    assert "7" not in redact_text("비밀번호 7 7")


def test_digit_count_shapes() -> None:
    assert digit_count("4111-1111") == 8
    assert digit_count("일이삼") == 3
    assert digit_count("하나") == 1
    assert digit_count("요금") == 0
    assert digit_count("") == 0


def test_words_keep_timings_and_redact_per_speaker() -> None:
    words = [
        {"speaker": "caller", "word": w, "start": i * 0.5, "end": i * 0.5 + 0.4, "conf": 0.9}
        for i, w in enumerate(["비밀번호", "일", "이", "삼", "사", "입니다"])
    ]
    # The agent talks in between; the caller's run must still be seen as one run.
    words.insert(3, {"speaker": "agent", "word": "네", "start": 1.2, "end": 1.3, "conf": 0.9})
    redacted, text = redact_words(words)
    caller = [w for w in redacted if w["speaker"] == "caller"]
    assert [w["word"] for w in caller] == ["비밀번호", REDACTED, REDACTED, REDACTED, REDACTED, "입니다"]
    assert [w["start"] for w in redacted] == [w["start"] for w in words]
    assert "일" not in text.split() and "삼" not in text.split()
    assert text.startswith("caller: 비밀번호 [redacted]")


@given(st.lists(st.sampled_from(SINO), min_size=4, max_size=19), st.booleans())
def test_any_spoken_digit_run_of_pin_length_is_redacted(digits: list[str], joined: bool) -> None:
    spoken = "".join(digits) if joined else " ".join(digits)
    out = redact_text(f"고객님 {spoken} 맞으세요")
    assert out == f"고객님 {REDACTED} 맞으세요"


@given(st.text(alphabet="0123456789", min_size=13, max_size=19), st.sampled_from([" ", "-", ""]))
def test_any_card_number_is_redacted(number: str, sep: str) -> None:
    grouped = sep.join(number[i:i + 4] for i in range(0, len(number), 4))
    out = redact_text(f"카드 {grouped} 입니다")
    assert not any(ch.isdigit() for ch in out)
