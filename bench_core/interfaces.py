"""The objects that pass between the host and plugins.

Plugins build and consume these; the host never looks inside a model, rule or surrogate.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Collection,
    Hashable,
    Iterable,
    Iterator,
    Literal,
    Protocol,
    runtime_checkable,
)

import torch
from pydantic import Field
from torch import Tensor, nn

from bench_core.errors import Diverged

EXECUTION_ONLY = "untied_execution_only"


def execution_option(default: Any, **field_kwargs: Any) -> Any:
    """A pydantic ``Field`` for a parameter that changes how a run executes or what it logs,
    never what it learns: ``torch.compile``, an evaluation batch size or interval, a diagnostic
    that restores every random stream. Such a parameter still identifies the run (its run id,
    so toggling it trains new records beside the old ones) but not its **seed**: the data split,
    initial weights and batch order stay those of the run without it, so the two are paired
    (and the same up to float reordering). Use it only where that holds."""
    extra = dict(field_kwargs.pop("json_schema_extra", None) or {})
    extra[EXECUTION_ONLY] = True
    return Field(default, json_schema_extra=extra, **field_kwargs)


def is_execution_option(field_info: Any) -> bool:
    """Whether a pydantic field was declared with :func:`execution_option` (or
    :func:`location_option`)."""
    extra = getattr(field_info, "json_schema_extra", None)
    return isinstance(extra, dict) and bool(extra.get(EXECUTION_ONLY) or extra.get(LOCATION_ONLY))


LOCATION_ONLY = "untied_location_only"


def location_option(default: Any, **field_kwargs: Any) -> Any:
    """A pydantic ``Field`` for a parameter that says where a run's inputs come from, never what
    they are: a dataset's ``root`` folder, whether it may ``download`` missing files. It
    identifies neither the run (its run id) nor its seed, so writing ``download = true`` into a
    spec trains nothing new and a run reads the same records wherever its files lie; the
    record still holds the value. The files must be the same wherever they come from."""
    extra = dict(field_kwargs.pop("json_schema_extra", None) or {})
    extra[LOCATION_ONLY] = True
    return Field(default, json_schema_extra=extra, **field_kwargs)


def is_location_option(field_info: Any) -> bool:
    """Whether a pydantic field was declared with :func:`location_option`."""
    extra = getattr(field_info, "json_schema_extra", None)
    return isinstance(extra, dict) and bool(extra.get(LOCATION_ONLY))


VALUE_REVISIONS = "untied_value_revisions"


def revised_option(default: Any, revisions: dict[Any, str], **field_kwargs: Any) -> Any:
    """A pydantic ``Field`` for a parameter some of whose values changed what a run computes
    after records were made with them: ``revisions`` maps each such value to a short revision
    tag (``{"rademacher": "2"}``). A run with that value carries the tag in its run id, so
    ``untied run`` trains it again instead of taking the old records for it (they stay
    recognised as the same run's, like those of another component version, and are never
    counted in a table), while runs with the parameter's other values keep their ids and
    records. The seed is not changed. When every value changed, bump the component's
    ``version`` instead."""
    extra = dict(field_kwargs.pop("json_schema_extra", None) or {})
    extra[VALUE_REVISIONS] = [[value, str(tag)] for value, tag in revisions.items()]
    return Field(default, json_schema_extra=extra, **field_kwargs)


def value_revision(field_info: Any, value: Any) -> str | None:
    """The revision tag :func:`revised_option` gave ``value`` of this field, else None."""
    extra = getattr(field_info, "json_schema_extra", None)
    if not isinstance(extra, dict):
        return None
    return next((tag for v, tag in extra.get(VALUE_REVISIONS) or () if v == value), None)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from hashing ``parts`` (their ``repr``) with BLAKE2b: stable across runs,
    processes and machines, unlike Python's ``hash``."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class Activation:
    """A forward activation ``f`` as registered by ``register_activations``.

    ``native``: differentiable torch implementation whose autograd backward is ``f'`` (for
    non-differentiable ``f`` such as a step, a function whose backward is 0).
    ``derivative``: ``f'(x)`` as a tensor function (used by surrogates that normalise by the
    tied derivative and by the direction diagnostic).
    ``saves``: what ``native`` keeps for backward: ``"input"``, ``"output"`` or ``"nothing"``.
    ``derivative_of_output`` (optional): ``f'(x)`` computed from the output ``y = native(x)``,
    for an ``f`` whose derivative is a function of its output (``tanh``: ``1 - y^2``); it must
    give exactly ``derivative(x)`` (the same operations on the same values), so that a
    surrogate that needs ``f'`` beside ``f`` (a mean of ``f'`` to scale by) may use it instead
    of evaluating ``f`` a second time. None: use ``derivative``.
    """

    name: str
    native: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    saves: Literal["input", "output", "nothing"] = "input"
    derivative_of_output: Callable[[Tensor], Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        return self.native(x)


class NativeActivation(nn.Module):
    """An activation site using ``f`` with its own derivative in backward (the tied
    configuration, ``f/f'``): what a model gets when a run names no surrogate.

    ``elementwise = True``: an activation module that sets it promises that its forward and
    backward act on every element alone and deterministically (no reduction over the tensor, no
    random draw, no parameters), so a trainer may apply one instance to a stack of grouped runs
    (a leading model axis). Such a module may also give its backward factor directly,
    ``local_gradient(x) = g(x)`` with ``dL/dx = dL/dy * g(x)``, so that a trainer can run the
    backward pass by hand. Surrogate modules declare both when they hold."""

    elementwise = True

    def local_gradient(self, x: Tensor) -> Tensor:
        return self.activation.derivative(x)

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.native(x)

    def extra_repr(self) -> str:
        return f"{self.activation.name}, tied"


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data."""

    name: str
    input_shape: tuple[int, ...]
    num_outputs: int
    task: Literal["classification", "regression"] = "classification"
    num_classes: int | None = None


@dataclass
class FunctionSlice:
    """A 1-D slice through the input space of a function-approximation task, along which the
    plots draw the target beside the learned function (``untied plot``).

    ``coordinate``: ``(N,)`` positions along the slice (the plot's x axis, labelled ``label``);
    ``inputs``: ``(N, *input_shape)`` the model's inputs at those positions; ``target``: ``(N,)``
    the exact target there; ``output``: which model output to compare with it. A dataset puts
    its slices in :attr:`DataBundle.slices` (:func:`bench_core.data.axis_slice` builds one from
    an analytic function); after training, the runner evaluates the run's trained model on them
    once and records ``{name: {"x", "target", "prediction", "label"}}`` as the record's
    ``slices_json`` column. No trainer needs to do anything."""

    coordinate: Tensor
    inputs: Tensor
    target: Tensor
    label: str = "x"
    output: int = 0

    def __post_init__(self) -> None:
        n = len(self.coordinate)
        if len(self.inputs) != n or len(self.target) != n:
            raise ValueError(f"slice: coordinate, inputs and target differ in length "
                             f"({n}, {len(self.inputs)}, {len(self.target)})")


@dataclass
class DataBundle:
    """Train and test tensors on the run's device. Classification targets are int64 class
    indices (a single-output binary task uses 0/1); regression targets are float.

    ``eval_sets`` holds further named evaluation sets of the same task, for example
    ``{"noisy": (x_test + noise, y_test)}``: a trainer evaluates the same trained model on each
    and reports its metrics with the set's name as a prefix (``noisy_test_accuracy``), so that
    several test conditions come from one training run. ``slices``: 1-D slices of a target
    function to plot the learned function against (:class:`FunctionSlice`)."""

    info: DataInfo
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    eval_sets: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    slices: dict[str, FunctionSlice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("dataset inputs and targets differ in length")
        for name, (x, y) in self.eval_sets.items():
            if len(x) != len(y):
                raise ValueError(f"evaluation set '{name}': inputs and targets differ in length")

    def test_sets(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Every evaluation set by metric prefix: ``"test"`` (the test split), then
        ``"<name>_test"`` for each entry of ``eval_sets``."""
        return {"test": (self.x_test, self.y_test),
                **{f"{name}_test": xy for name, xy in self.eval_sets.items()}}


@dataclass
class PassCounters:
    """Forward and backward passes a trainer performed: ``*_passes`` counts batched calls,
    ``*_samples`` the examples they covered. Plain Python ints, so counting never syncs."""

    forward_passes: int = 0
    backward_passes: int = 0
    forward_samples: int = 0
    backward_samples: int = 0

    def forward(self, n_samples: int, passes: int = 1) -> None:
        self.forward_passes += passes
        self.forward_samples += n_samples * passes

    def backward(self, n_samples: int, passes: int = 1) -> None:
        self.backward_passes += passes
        self.backward_samples += n_samples * passes


@dataclass
class RunContext:
    """Per-run services: device, seeded generators, pass counters and the epoch log."""

    seed: int
    device: torch.device
    counters: PassCounters = field(default_factory=PassCounters)
    curves: dict[str, list[float]] = field(default_factory=dict)
    _generators: dict[tuple[str, str], torch.Generator] = field(default_factory=dict, repr=False)
    _build: dict[tuple[str, str], torch.Generator] | None = field(default=None, repr=False)
    perturbation: str | None = None
    """``"init-ulp"``: every model this run builds has each initial parameter moved by one
    unit in the last place, up or down at random (:mod:`bench_core.results.stability`)."""
    stack_size: int = 1
    """How many runs were trained in one computation with this one, itself included (1:
    alone). The host sets it (a lone run: 1; a group given to ``fit_group``: the group's size),
    :func:`bench_core.grouping.fit_in_stacks` refines it per run (the size of the stack the run
    was trained in, 1 for a member trained alone), and a ``fit_group`` of a plugin's own may set
    it too. Records keep it (``stack_size``) because a stacked computation may round differently
    from the lone one (same operations, different kernels): a replay trains a run that was
    stacked in a stack again (:func:`bench_core.execution.replay.replay`)."""

    def stream_seed(self, stream: str) -> int:
        """The seed of a named random stream of this run (``"data"``, ``"init"``, ...)."""
        return derive_seed(self.seed, stream)

    def generator(self, stream: str, device: torch.device | str | None = None) -> torch.Generator:
        """A ``torch.Generator`` for ``stream``, seeded from the run seed, on ``device`` (default
        the run's). The same stream name returns the same generator within a run, except while
        a model is being built (:meth:`model_build`): there every stream starts afresh for each
        build, so a model built twice (a grouped run trained alone after all, the direction
        diagnostic's twin) draws the same numbers both times."""
        dev = torch.device(device) if device is not None else self.device
        key = (stream, str(dev))
        streams = self._generators if self._build is None else self._build
        if key not in streams:
            gen = torch.Generator(device=dev)
            gen.manual_seed(self.stream_seed(stream))
            streams[key] = gen
        return streams[key]

    @contextlib.contextmanager
    def model_build(self) -> Iterator[None]:
        """While a model (and what is built with it: activations, surrogates,
        reparametrizations) is built, :meth:`generator` gives streams that restart at their
        seed for this build alone; a component keeps the generator it got for later draws."""
        outer = self._build
        self._build = {}
        try:
            yield
        finally:
            self._build = outer

    @contextlib.contextmanager
    def preserve_random_state(self) -> Iterator[None]:
        """Run a side computation (e.g. a diagnostic) without changing the run's randomness:
        on exit every generator of this context gets its state back, generators first created
        inside are forgotten (their stream starts afresh when training asks for it), and the
        global torch RNG (CPU, and the run's CUDA device) is forked."""
        saved = {key: gen.get_state() for key, gen in self._generators.items()}
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices, device_type=self.device.type):
                yield
        finally:
            for key in [k for k in self._generators if k not in saved]:
                del self._generators[key]
            for key, state in saved.items():
                self._generators[key].set_state(state)

    def log_epoch(self, epoch: int, *, diagnostics: Collection[str] = (),
                  **metrics: float | Tensor) -> dict[str, float]:
        """Record one epoch's metrics (this is the one host sync per epoch) and raise
        :class:`Diverged` if any is NaN or infinite, except the keys named in ``diagnostics``
        (measurements such as a cosine that is undefined, NaN, for a zero gradient)."""
        values = {k: float(v.item() if isinstance(v, Tensor) else v) for k, v in metrics.items()}
        self.curves.setdefault("epoch", []).append(float(epoch))
        for k, v in values.items():
            self.curves.setdefault(k, []).append(v)
        bad = [k for k, v in values.items() if k not in diagnostics and not math.isfinite(v)]
        if bad:
            raise Diverged(f"non-finite {', '.join(bad)} at epoch {epoch}")
        return values


@runtime_checkable
class UpdateRule(Protocol):
    """What an update rule returns: ``torch.optim.Optimizer`` satisfies it."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> Any: ...


@dataclass
class TrainingSession:
    """Everything a trainer receives. ``build_model`` builds a freshly initialised model with the
    run's surrogate (``tied=True``: the native activation instead, same initial weights);
    ``build_rule(model)`` the run's update rule for it.

    ``trained_model``: the model the run trained, which the host evaluates after ``fit`` where
    it needs the model itself (the dataset's :attr:`DataBundle.slices`). By default the first
    model built with ``build_model()`` (not tied); a trainer that trains another one (a copy, a
    compiled or rebuilt model) sets it."""

    ctx: RunContext
    data: DataBundle
    build_model: Callable[..., nn.Module]
    build_rule: Callable[[nn.Module], UpdateRule]
    spec: dict[str, Any]
    trained_model: nn.Module | None = None


class Trainer(Protocol):
    def fit(self, session: TrainingSession) -> dict[str, float]: ...


@runtime_checkable
class GroupTrainer(Protocol):
    """Optional capability of a trainer: **grouped runs**.

    A trainer that can train several compatible runs (same shapes; they differ by seed, data
    subset, rule or scalar hyper-parameters) as one batched computation over a model axis
    implements, besides ``fit``:

    ``group_key(spec) -> Hashable | None``
        called by the runner in the main process with each run's canonical spec (one table per
        component, defaults filled in). Runs whose keys are equal (and not ``None``), with the
        same trainer table and device, may be handed to one ``fit_group`` call; ``None`` means
        "train this run alone". Keep it a pure function of the spec (strings, numbers, tuples).
    ``fit_group(sessions) -> list[dict[str, float] | BaseException]``
        trains every session (one per run, each with its own :class:`RunContext`, data and
        seeded streams) and returns one result per session, in order: its final metrics, or
        the exception that ended that run alone (``Diverged`` for a run that diverged). An
        exception raised by ``fit_group`` itself fails every run of the group.
    ``max_group_size`` (optional attribute, int or None)
        the largest group the trainer wants (memory); the runner splits larger groups.

    The results must equal those of ``fit`` on each session alone, to float tolerance: grouping
    is an optimisation, never a change of method. The runner still writes one record per run,
    resumes a half-finished group by running only its missing runs, and ``untied run
    --no-group`` calls ``fit`` run by run. A trainer without these methods is unaffected.
    """

    def group_key(self, spec: dict[str, Any]) -> Hashable | None: ...

    def fit_group(self, sessions: list[TrainingSession]) -> list[dict[str, float] | BaseException]:
        ...


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]: ...


def constraint_hooks(model: nn.Module) -> list[Callable[[], None]]:
    """The ``constrain_()`` methods of ``model``'s modules, to call after every weight update
    (e.g. BinaryConnect clips latent weights to [-1, 1]). Collect once, call each step."""
    return [m.constrain_ for m in model.modules() if callable(getattr(m, "constrain_", None))]


def module_measurements(model: nn.Module) -> dict[str, Tensor]:
    """Per-epoch measurements a model's modules report about themselves, for the curves.

    A module that defines ``epoch_measurements() -> dict[str, Tensor]`` (0-d tensors, e.g. the
    angle between a layer's forward and backward weights) contributes ``<key>/<module path>``
    for each of its keys, and every key also gets ``<key>``: its mean over the modules that
    report it (NaNs left out; NaN if none is finite). Values stay tensors on the model's device
    (no host sync): a trainer passes them to :meth:`RunContext.log_epoch` once per epoch as
    ``diagnostics`` (a NaN measurement is not a divergence). Called under ``torch.no_grad``.
    A trainer that supports them logs them every epoch and may return the means with its
    final metrics."""
    per_module: dict[str, Tensor] = {}
    by_key: dict[str, list[Tensor]] = {}
    with torch.no_grad():
        for path, module in model.named_modules():
            measure = getattr(module, "epoch_measurements", None)
            if not callable(measure):
                continue
            for key, value in measure().items():
                per_module[f"{key}/{path or type(module).__name__}"] = value
                by_key.setdefault(key, []).append(value.reshape(()))
    means = {key: torch.nanmean(torch.stack(values)) for key, values in by_key.items()}
    return {**per_module, **means}


_CPU_HOST_READ = threading.local()


@contextlib.contextmanager
def cpu_only_host_read() -> Iterator[None]:
    """Mark code that reads tensors on the host (``if t > x``, ``t.item()``) on a branch taken
    only when the run's device is the CPU, where no device has to be waited for (e.g. a cheap
    bound that decides whether an exact fallback is needed). Sync checkers
    (``benchmarks/device.py``) do not count what happens inside. Never wrap a path an
    accelerator takes: there such a read stalls the device every step."""
    _CPU_HOST_READ.depth = getattr(_CPU_HOST_READ, "depth", 0) + 1
    try:
        yield
    finally:
        _CPU_HOST_READ.depth -= 1


def in_cpu_only_host_read() -> bool:
    """Whether this thread is inside :func:`cpu_only_host_read`."""
    return getattr(_CPU_HOST_READ, "depth", 0) > 0
