"""What the deep probes share: a verdict with its evidence (``Finding``),
the requests they make (``Workload``, drawn from the cases) and what they
may watch and have found so far (``Context``)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .cases import Suite
from .client import Client
from .course import Edition
from .proc import Process

PASS, FOUND, NOT_SEEN = "PASS", "FOUND", "NOT SEEN"


@dataclass(frozen=True)
class Finding:
    """One probe's verdict and its evidence (or how hard it tried)."""

    probe: str
    verdict: str
    detail: str

    @property
    def found(self) -> bool:
        """Did the probe find the symptom?"""
        return self.verdict == FOUND


@dataclass
class Workload:
    """Valid requests, drawn from the cases: the questions, and the
    (question, state) pairs of the state suites."""

    questions: List[str]
    pairs: List[Tuple[str, str]]

    @classmethod
    def from_suites(cls, suites: Sequence[Suite]) -> "Workload":
        """The questions and pairs the cases ask about."""
        questions, pairs = {}, {}
        for suite in suites:
            for case in suite.cases:
                body = case.body if isinstance(case.body, dict) else {}
                question, state = body.get("question"), body.get("state")
                if isinstance(question, str):
                    questions[question] = None
                    if isinstance(state, str):
                        pairs[(question, state)] = None
        return cls(sorted(questions), sorted(pairs))

    def cheap(self, count: int) -> List[Tuple[str, Any]]:
        """``count`` state_mean requests, over the pairs in turn."""
        return [("state_mean", {"question": question, "state": state})
                for question, state in (self.pairs[i % len(self.pairs)] for i in range(count))]

    def large(self) -> List[Tuple[str, Any]]:
        """One mean_by_category request per question: the largest answers."""
        return [("mean_by_category", {"question": question}) for question in self.questions]


@dataclass
class Context:   # pylint: disable=too-many-instance-attributes
    """What the probes share: the server, the requests to make, what they
    may watch, and what they found along the way."""

    client: Client
    workload: Workload
    edition: Edition
    process: Optional[Process] = None
    results_dir: Optional[Path] = None
    accepted: List[str] = field(default_factory=list)   # every job id the probes were given
    clues: Dict[str, List[str]] = field(default_factory=dict)   # probe -> evidence

    def clue(self, probe: str, evidence: str) -> None:
        """Note evidence for ``probe`` found while another probe ran."""
        found = self.clues.setdefault(probe, [])
        if len(found) < 3:
            found.append(evidence)
