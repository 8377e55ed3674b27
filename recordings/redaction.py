"""Remove card-like digit runs and PINs from transcripts before they are stored.

Digits reach a transcript in three shapes: ASCII digits (``4111 1111 …``, typed notes), Korean
Sino-Korean digit words (``일 이 삼 사``, ``공``/``영`` for zero, or run together as ``일이삼사``) and
native Korean counting words (``하나 둘 셋``), plus English digit words for bilingual callers.
Recognisers split such runs unpredictably, so redaction works on *runs of digit-like tokens*: any
run that adds up to ``MIN_RUN_DIGITS`` digits or more (PINs are 4 to 6 digits, cards 13 to 19) is
replaced, and after a PIN/password keyword a shorter run is replaced too. The price is that a run of
ordinary words that happen to be digit syllables (``이 사 일``…) may be over-redacted; losing a few
words is preferred to storing a PIN.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

REDACTED = "[redacted]"
MIN_RUN_DIGITS = 4
"""Runs of at least this many digits are redacted wherever they appear (PIN length)."""
MIN_RUN_AFTER_KEYWORD = 2
"""After a keyword such as 비밀번호 or PIN, even a short digit run is redacted."""
KEYWORD_WINDOW = 3
"""How many tokens after a keyword still count as "after the keyword"."""

SINO_DIGITS = {"공": 0, "영": 0, "일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "륙": 6,
               "칠": 7, "팔": 8, "구": 9}
NATIVE_DIGITS = {"하나": 1, "둘": 2, "셋": 3, "넷": 4, "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9}
"""Standalone counting forms only: 네 ("yes"/four), 한, 두, 세 are left out on purpose, they are far
more often "yes" or a determiner than a digit being read out."""
ENGLISH_DIGITS = {"zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                  "seven": 7, "eight": 8, "nine": 9}
KEYWORDS = ("비밀번호", "비번", "핀", "pin", "password", "암호", "카드번호", "card", "cvc", "cvv",
            "보안코드", "계좌번호")
_SEPARATORS = {"-", ".", ",", "/"}
_DIGITS_WITH_SEPARATORS = re.compile(r"^[0-9]+(?:[-./][0-9]+)*$")
_TOKEN = re.compile(r"\S+")
_PUNCT = ".,!?;:'\"()[]"


def digit_count(token: str) -> int:
    """How many digits ``token`` spells (0 if it is not digit-like)."""
    t = token.strip(_PUNCT).lower()
    if not t:
        return 0
    if _DIGITS_WITH_SEPARATORS.match(t):
        return sum(ch.isdigit() for ch in t)
    if t in NATIVE_DIGITS or t in ENGLISH_DIGITS:
        return 1
    # Sino-Korean digits run together by the recogniser (일이삼사) count one per syllable.
    if all(ch in SINO_DIGITS for ch in t):
        return len(t)
    return 0


def _is_keyword(token: str) -> bool:
    t = token.strip(_PUNCT).lower()
    return any(t.startswith(k) for k in KEYWORDS)


def redaction_mask(tokens: Sequence[str]) -> list[bool]:
    """True for each token that must be redacted."""
    mask = [False] * len(tokens)
    keyword_until = -1
    i = 0
    while i < len(tokens):
        if _is_keyword(tokens[i]):
            keyword_until = i + KEYWORD_WINDOW
        if digit_count(tokens[i]) == 0:
            i += 1
            continue
        j, digits = i, 0
        while j < len(tokens) and (digit_count(tokens[j]) or tokens[j] in _SEPARATORS):
            digits += digit_count(tokens[j])
            j += 1
        threshold = MIN_RUN_AFTER_KEYWORD if i <= keyword_until else MIN_RUN_DIGITS
        if digits >= threshold:
            for k in range(i, j):
                mask[k] = True
        i = j
    return mask


def redact_text(text: str) -> str:
    """``text`` with digit runs replaced by one ``[redacted]`` each; whitespace and lines kept."""
    matches = list(_TOKEN.finditer(text))
    mask = redaction_mask([m.group() for m in matches])
    out: list[str] = []
    last = 0
    previous_redacted = False
    for m, hide in zip(matches, mask):
        if hide:
            if previous_redacted:
                last = m.end()
                continue
            out.append(text[last: m.start()] + REDACTED)
        else:
            out.append(text[last: m.end()])
        last = m.end()
        previous_redacted = hide
    out.append(text[last:])
    return "".join(out)


def redact_words(words: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Redact recogniser words per speaker (timings kept) and return them with the stored text.

    Runs are found per speaker because the agent reading back a card number is as sensitive as the
    caller saying it, and interleaving the two channels would break a run apart.
    """
    result = [dict(w) for w in words]
    by_speaker: dict[str, list[int]] = {}
    for index, w in enumerate(result):
        by_speaker.setdefault(str(w.get("speaker", "")), []).append(index)
    for indexes in by_speaker.values():
        mask = redaction_mask([str(result[i].get("word", "")) for i in indexes])
        for i, hide in zip(indexes, mask):
            if hide:
                result[i]["word"] = REDACTED
                result[i]["redacted"] = True
    lines: list[str] = []
    speaker = None
    for w in sorted(result, key=lambda w: (float(w.get("start", 0.0)), str(w.get("speaker", "")))):
        if w.get("speaker") != speaker:
            speaker = w.get("speaker")
            lines.append(f"{speaker}:")
        if w["word"] == REDACTED and lines[-1].endswith(REDACTED):
            continue
        lines[-1] += " " + str(w["word"])
    return result, "\n".join(lines)
