"""Post-call satisfaction survey: the pure part (answers, sampling, what counts as a low score).

The survey is an ordinary flow, ``ivr/flows/survey.yaml``, run by the same :class:`IvrEngine` as
the main IVR: a ``say`` intro, a ``menu`` for the score (1-5), a ``menu`` for "was your problem
solved?" (1 yes, 2 no) and a ``menu`` that waits for ``#`` while the caller's spoken comment is
recorded. The engine records each menu choice in the call context as ``menu_<step>``; this module
reads them back. ``callcentre/survey_service.py`` runs it on the bus and stores the results.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from callcentre.domain.context import CallContext

SURVEY_FLOW_PATH = Path(__file__).parent / "flows" / "survey.yaml"
SCORE_KEY = "menu_score"
SOLVED_KEY = "menu_solved"
COMMENT_KEY = "menu_comment"
COMMENT_STEP = "comment"


@dataclass(frozen=True)
class SurveyPolicy:
    sample_rate: float = 1.0
    """Share of eligible calls that are offered the survey (0..1); 1 means every call."""
    low_score: int = 2
    """A score at or below this raises a supervisor alert and creates a callback task."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"survey sample_rate must be between 0 and 1, got {self.sample_rate}")
        if not 1 <= self.low_score <= 5:
            raise ValueError(f"survey low_score must be between 1 and 5, got {self.low_score}")


@dataclass(frozen=True)
class SurveyAnswers:
    score: int | None
    solved: bool | None
    comment_finished: bool
    """The caller ended the comment with ``#`` (a comment may also end by timeout)."""

    @property
    def complete(self) -> bool:
        """Both questions answered (the comment is optional)."""
        return self.score is not None and self.solved is not None


def answers_from(context: CallContext) -> SurveyAnswers:
    score_text = context.get(SCORE_KEY)
    solved_text = context.get(SOLVED_KEY)
    score = int(score_text) if score_text and score_text.isdigit() and 1 <= int(score_text) <= 5 else None
    solved = {"1": True, "2": False}.get(solved_text or "")
    return SurveyAnswers(score, solved, context.get(COMMENT_KEY) == "#")


def should_offer(policy: SurveyPolicy, rng: random.Random) -> bool:
    """Random sampling: each eligible call is offered with probability ``sample_rate``."""
    if policy.sample_rate >= 1.0:
        return True
    return rng.random() < policy.sample_rate


def is_low(answers: SurveyAnswers, policy: SurveyPolicy) -> bool:
    return answers.score is not None and answers.score <= policy.low_score
