"""A skeleton for ``fit_group`` (grouped runs, :class:`bench_core.interfaces.GroupTrainer`).

Most trainers that batch runs can batch only some of them (a model of the right structure, a
rule of the right kind) and must train the others alone. :func:`fit_in_stacks` does that
bookkeeping: it prepares every session, sorts the prepared ones into stacks of compatible runs,
trains each stack of two or more at once and everything else through ``fit``, and returns one
result per session in order, a run's exception standing for its result.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence, TypeVar

from bench_core.interfaces import TrainingSession

Member = TypeVar("Member")
Result = "dict[str, float] | BaseException"


def fit_in_stacks(sessions: Sequence[TrainingSession],
                  prepare: Callable[[TrainingSession], Member | None],
                  signature: Callable[[Member], Hashable],
                  train_stack: Callable[[list[Member]], list[tuple[Member, Any]]],
                  fit_alone: Callable[[TrainingSession], dict[str, float]],
                  session_of: Callable[[Member], TrainingSession]) -> list[Any]:
    """``prepare(session)``: the run as a stack member, or ``None`` to train it alone (an
    exception fails that run alone). ``signature(member)``: members with equal signatures are
    stacked. ``train_stack(members)``: train them together, returning ``(member, result)``
    pairs in any order. ``fit_alone(session)``: the trainer's ``fit``."""

    def alone(session: TrainingSession) -> Any:
        try:
            return fit_alone(session)
        except Exception as exc:  # noqa: BLE001 - this run's own failure, recorded as such
            return exc

    results: list[Any] = [None] * len(sessions)
    stacks: dict[Hashable, list[tuple[int, Member]]] = {}
    for k, session in enumerate(sessions):
        try:
            member = prepare(session)
        except Exception as exc:  # noqa: BLE001 - this run's own failure
            results[k] = exc
            continue
        if member is None:
            results[k] = alone(session)
        else:
            stacks.setdefault(signature(member), []).append((k, member))
    for stack in stacks.values():
        if len(stack) == 1:
            k, member = stack[0]
            results[k] = alone(session_of(member))
            continue
        where = {id(member): k for k, member in stack}
        for member, out in train_stack([m for _, m in stack]):
            results[where[id(member)]] = out
    return results
