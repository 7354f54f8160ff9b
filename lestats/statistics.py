"""The nine statistics of API.md, as pure functions of a DataIndex.

Each statistic takes the index, a question and (for the ``state_*`` ones) a
state, and returns the JSON-ready ``data`` of the answer.  ``prepare`` checks
a request body against the index *before* a job is accepted, so that a bad
question or state is a 400 at once and a job never fails for it later.

Orders: means ascend, best/worst lists run best first / worst first, diffs run
largest first; ties break by state name.  By-category keys are ``str()`` of
the tuple, in tuple order.  Nothing here locks: the index never changes.
"""

from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional

from .data import DataIndex, QuestionMeans

LOWEST_IS_BEST = frozenset({
    "Percent of adults aged 18 years and older who have an overweight classification",
    "Percent of adults aged 18 years and older who have obesity",
    "Percent of adults who engage in no leisure-time physical activity",
    "Percent of adults who report consuming fruit less than one time daily",
    "Percent of adults who report consuming vegetables less than one time daily",
})
HIGHEST_IS_BEST = frozenset({
    "Percent of adults who achieve at least 150 minutes a week of moderate-intensity"
    " aerobic physical activity or 75 minutes a week of vigorous-intensity aerobic"
    " activity (or an equivalent combination)",
    "Percent of adults who achieve at least 150 minutes a week of moderate-intensity"
    " aerobic physical activity or 75 minutes a week of vigorous-intensity aerobic"
    " physical activity and engage in muscle-strengthening activities on 2 or more"
    " days a week",
    "Percent of adults who achieve at least 300 minutes a week of moderate-intensity"
    " aerobic physical activity or 150 minutes a week of vigorous-intensity aerobic"
    " activity (or an equivalent combination)",
    "Percent of adults who engage in muscle-strengthening activities on 2 or more"
    " days a week",
})
TOP = 5


class QueryError(ValueError):
    """The request cannot be answered from the data (an HTTP 400); the
    message says which field is wrong and why."""


def _ascending(means: Mapping[str, float]) -> Dict[str, float]:
    return dict(sorted(means.items(), key=lambda item: (item[1], item[0])))


def _descending(means: Mapping[str, float]) -> Dict[str, float]:
    return dict(sorted(means.items(), key=lambda item: (-item[1], item[0])))


def _lowest_is_best(question: str) -> bool:
    if question in LOWEST_IS_BEST:
        return True
    if question in HIGHEST_IS_BEST:
        return False
    raise QueryError(f"no best/worst direction is known for question {question!r}")


def states_mean(means: QuestionMeans) -> Dict[str, float]:
    """{state: mean} for every state, ascending by mean."""
    return _ascending(means.state_means)


def state_mean(means: QuestionMeans, state: str) -> Dict[str, float]:
    """{state: mean} for one state."""
    return {state: means.state_means[state]}


def best5(means: QuestionMeans, lowest_is_best: bool) -> Dict[str, float]:
    """The five best states, best first."""
    order = _ascending if lowest_is_best else _descending
    return dict(list(order(means.state_means).items())[:TOP])


def worst5(means: QuestionMeans, lowest_is_best: bool) -> Dict[str, float]:
    """The five worst states, worst first."""
    order = _descending if lowest_is_best else _ascending
    return dict(list(order(means.state_means).items())[:TOP])


def global_mean(means: QuestionMeans) -> Dict[str, float]:
    """{"global_mean": mean over all rows of the question}."""
    return {"global_mean": means.global_mean}


def diff_from_mean(means: QuestionMeans) -> Dict[str, float]:
    """{state: global mean - state mean} for every state, largest first."""
    return _descending({state: means.global_mean - mean
                        for state, mean in means.state_means.items()})


def state_diff_from_mean(means: QuestionMeans, state: str) -> Dict[str, float]:
    """{state: global mean - state mean} for one state."""
    return {state: means.global_mean - means.state_means[state]}


def mean_by_category(means: QuestionMeans) -> Dict[str, float]:
    """{"('State', 'Category', 'Stratification')": mean}, in key order."""
    rows = sorted((state,) + group + (mean,)
                  for state, groups in means.group_means.items()
                  for group, mean in groups.items())
    return {str(row[:3]): row[3] for row in rows}


def state_mean_by_category(means: QuestionMeans, state: str) -> Dict[str, Dict[str, float]]:
    """{state: {"('Category', 'Stratification')": mean}}, in key order."""
    groups = means.group_means.get(state, {})
    return {state: {str(group): groups[group] for group in sorted(groups)}}


class Statistic(NamedTuple):
    """One statistic endpoint: its function and what its body must hold."""

    function: Callable[..., Any]
    needs_state: bool = False
    needs_direction: bool = False


STATISTICS: Mapping[str, Statistic] = {
    "states_mean": Statistic(states_mean),
    "state_mean": Statistic(state_mean, needs_state=True),
    "best5": Statistic(best5, needs_direction=True),
    "worst5": Statistic(worst5, needs_direction=True),
    "global_mean": Statistic(global_mean),
    "diff_from_mean": Statistic(diff_from_mean),
    "state_diff_from_mean": Statistic(state_diff_from_mean, needs_state=True),
    "mean_by_category": Statistic(mean_by_category),
    "state_mean_by_category": Statistic(state_mean_by_category, needs_state=True),
}


def _text_field(body: Mapping[str, Any], field: str) -> str:
    if field not in body:
        raise QueryError(f"field {field!r} is required")
    value = body[field]
    if not isinstance(value, str):
        raise QueryError(f"field {field!r} must be a string, not {type(value).__name__}")
    return value


class Query(NamedTuple):
    """A checked request: statistic ``name`` of ``question`` (and ``state``
    for the state_* statistics).  Equal queries have equal answers on the
    same index, so a Query can key a cache."""

    name: str
    question: str
    state: Optional[str] = None

    def compute(self, index: DataIndex) -> Any:
        """The statistic's JSON-ready ``data``."""
        statistic = STATISTICS[self.name]
        args: List[Any] = [index.questions[self.question]]
        if statistic.needs_state:
            args.append(self.state)
        if statistic.needs_direction:
            args.append(_lowest_is_best(self.question))
        return statistic.function(*args)


def prepare(index: DataIndex, name: str, body: Mapping[str, Any]) -> Query:
    """Check ``body`` for statistic ``name`` against ``index``.

    Raise QueryError (a 400) if a field is missing or not a string, the
    question is not in the data, the state has no rows for it, or best5/worst5
    has no known direction.  Unknown extra fields are ignored.
    """
    statistic = STATISTICS[name]
    question = _text_field(body, "question")
    means: Optional[QuestionMeans] = index.questions.get(question)
    if means is None:
        raise QueryError(f"question not in the data set: {question!r}")
    state = None
    if statistic.needs_state:
        state = _text_field(body, "state")
        if state not in means.state_means:
            raise QueryError(f"state {state!r} has no rows for question {question!r}")
    if statistic.needs_direction:
        _lowest_is_best(question)
    return Query(name, question, state)
