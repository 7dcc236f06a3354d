"""A skeleton for ``fit_group`` (grouped runs, :class:`bench_core.interfaces.GroupTrainer`),
and :func:`plain_module`, the proof a grouped path needs before it replaces a layer by its own
stacked computation (:func:`plain_sequence` for a whole chain), and :func:`stack_rule`, by which
a layer type the grouped path does not know says how its instances stack.

Most trainers that batch runs can batch only some of them (a model of the right structure, a
rule of the right kind) and must train the others alone. :func:`fit_in_stacks` does that
bookkeeping: it prepares every session, sorts the prepared ones into stacks of compatible runs,
trains each stack of two or more at once and everything else through ``fit``, and returns one
result per session in order, a run's exception standing for its result.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Protocol, Sequence, TypeVar

from torch import Tensor, nn

from bench_core.interfaces import TrainingSession

Member = TypeVar("Member")
Result = "dict[str, float] | BaseException"


_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                 "_backward_pre_hooks")
_TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def plain_module(module: nn.Module, *types: type) -> bool:
    """Whether a grouped path may replace ``module`` by its own stacked computation, because it
    can prove that computation is the module's: the type is exactly one of ``types`` (a
    subclass may override ``forward``; no ``types``: any type), ``forward`` is not replaced on
    the instance, no forward or backward hook is registered on it, and none of its own
    parameters carries a gradient hook or is parametrized. A method that changes a layer's
    backward pass (a reparametrization that swaps the backward weights, a backward hook) then
    never runs as plain back-propagation in a group: the run is trained alone instead."""
    if types and type(module) not in types:
        return False
    if "forward" in vars(module) or any(getattr(module, h, None) for h in _MODULE_HOOKS):
        return False
    if getattr(module, "parametrizations", None):
        return False
    return not any(getattr(p, h, None) for p in module.parameters(recurse=False)
                   for h in _TENSOR_HOOKS)


_SEQUENTIAL_COMPUTATION = ("forward", "__call__", "_call_impl", "__iter__", "__len__",
                           "__getitem__", "_modules")


def plain_sequence(module: nn.Module) -> list[nn.Module] | None:
    """The modules an ``nn.Sequential`` applies, in order, when a grouped path may treat
    ``module`` as exactly that chain: it is an ``nn.Sequential`` or a subclass that leaves the
    computation alone (none of ``forward``, ``__call__``, ``_call_impl``, ``__iter__``,
    ``__len__``, ``__getitem__`` is defined below ``nn.Sequential``; a subclass may add methods
    and attributes, e.g. a view of its layers for trainers that need one), and it is otherwise
    plain (:func:`plain_module`: no hook, no ``forward`` on the instance). ``None`` otherwise.
    Each returned child must still be proved plain on its own."""
    if not isinstance(module, nn.Sequential) or not plain_module(module):
        return None
    for cls in type(module).__mro__:
        if cls is nn.Sequential:
            break
        if any(name in vars(cls) for name in _SEQUENTIAL_COMPUTATION):
            return None
    return list(module)


class StackedLayer(Protocol):
    """K instances of one layer type as one computation on a leading model axis, built by the
    type's ``stack`` (:func:`stack_rule`)."""

    def __call__(self, h: Tensor) -> Tensor:
        """``(K, B, ...)`` inputs, one slice per run, to ``(K, B, ...)`` outputs, exactly what
        each instance computes on its slice, forward and backward (autograd)."""

    def parameters(self) -> list[Tensor]:
        """The stacked leaf tensors ``(K, ...)`` a grouped trainer updates (``requires_grad``)."""

    def write_back(self) -> None:
        """Copy the stacked values into every instance's own parameters."""


def stack_rule(module: nn.Module) -> Callable[[list[nn.Module]], StackedLayer] | None:
    """How instances of ``module``'s type stack, if the type says so: a layer type that a
    grouped trainer does not know may define the classmethod ``stack(modules) -> StackedLayer``
    (K instances, one per run, with equal ``stack_signature()``) and the method
    ``stack_signature() -> Hashable | None`` (instances with equal signatures stack; ``None``:
    this instance cannot). A trainer then stacks the layer without knowing it, provided the
    instance is otherwise plain (:func:`plain_module` with no types: no hook, no ``forward``
    replaced on the instance, no parametrization): the type's own ``forward``, which its
    ``stack`` reproduces, is what runs alone. ``None`` when the type defines no ``stack`` or this
    instance declines (the run is then trained alone). A grouped trainer calls it for each layer
    type it does not know; ``tests/stack_plugin.py`` is a toy example."""
    stack = getattr(type(module), "stack", None)
    signature = getattr(module, "stack_signature", None)
    if not callable(stack) or not callable(signature) or not plain_module(module):
        return None
    return stack if signature() is not None else None


def global_module_hooks() -> bool:
    """Whether hooks for every module are installed (``torch.nn.modules.module.register_module_
    forward_hook`` and kin): no layer can then be proved plain."""
    from torch.nn.modules import module as torch_module

    return any(getattr(torch_module, h, None) for h in _GLOBAL_HOOKS)


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

    def trained_in(session: Any, size: int) -> None:
        if isinstance(session, TrainingSession):
            session.ctx.stack_size = size  # recorded: a stack may round unlike a lone run

    def alone(session: TrainingSession) -> Any:
        trained_in(session, 1)
        if isinstance(session, TrainingSession):
            session.trained_model = None   # prepare's model, if any, is not the one fit trains
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
        for _, member in stack:
            trained_in(session_of(member), len(stack))
        for member, out in train_stack([m for _, m in stack]):
            results[where[id(member)]] = out
    return results
