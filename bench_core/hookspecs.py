"""The hook specifications every untied-bench plugin implements a subset of.

A plugin is a module (or object) exposed through the ``untied`` entry-point group and decorated
with :data:`hookimpl`. Every hook receives one argument, ``register``, a callback::

    register(name, factory, *, params=None, description=None)

``name``
    unique within the family (lower case, digits, ``_``); a clash is an error naming both plugins.
``factory``
    a callable building the component; what it is called with depends on the family (below).
``params``
    a pydantic ``BaseModel`` subclass describing the component's parameters; a spec table
    ``{name = "...", ...}`` is validated against it before anything runs. ``None`` = no parameters.
``description``
    one line shown by ``untied list``; defaults to the first line of the factory's docstring.

Factories are called with the validated parameter model as their first argument and keyword
arguments depending on the family; the objects they return follow the protocols in
:mod:`bench_core.interfaces`. The host passes nothing else and names no component.
"""

from __future__ import annotations

import pluggy

PROJECT = "untied"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_activations(register):
    """Register forward activations ``f``.

    ``factory(params) -> interfaces.Activation``: the forward function, its derivative ``f'``
    (what the ``tied`` backward uses) and a differentiable native implementation.
    """


@hookspec
def register_surrogates(register):
    """Register backward functions ``g`` that replace ``f'`` in back-propagation.

    ``factory(params, *, activation, ctx) -> torch.nn.Module``: called once per activation site
    of a model, with the run's :class:`interfaces.Activation` and :class:`interfaces.RunContext`
    (for seeded generators); the module computes ``f(x)`` forward and ``dL/dx = dL/dy * g(x)``
    backward. A module whose forward and backward act element by element, deterministically,
    may set the class attribute ``elementwise = True`` (see
    :class:`interfaces.NativeActivation`): trainers then batch grouped runs through it.
    """


@hookspec
def register_update_rules(register):
    """Register weight-update rules.

    ``factory(params, *, model, ctx) -> interfaces.UpdateRule``: an object with ``zero_grad()``
    and ``step()`` (any ``torch.optim.Optimizer`` qualifies). Rules that need each layer's
    per-sample inputs or output errors install module hooks on ``model`` here.
    """


@hookspec
def register_trainers(register):
    """Register trainers: the loop that turns data, a model and a rule into metrics.

    ``factory(params) -> interfaces.Trainer``; ``trainer.fit(session)`` receives a
    :class:`interfaces.TrainingSession` (data, model and rule builders, run context) and returns
    the final metrics. Trainers that use no autograd build no rule.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    ``factory(params, *, ctx) -> interfaces.DataBundle``: train/test tensors already on
    ``ctx.device``, split with ``ctx.generator("data")`` so the split follows the run's seed.
    """


@hookspec
def register_models(register):
    """Register model architectures.

    ``factory(params, *, data, activation, ctx) -> torch.nn.Module``: ``data`` is the
    :class:`interfaces.DataInfo` (input shape, outputs, task); ``activation()`` returns a fresh
    activation module (forward ``f`` with the run's surrogate backward) for each site.
    """


@hookspec
def register_reparametrizations(register):
    """Register weight re-parametrisations: transforms of a built model's parameters that any
    model and any update rule compose with (weight normalisation, standardisation, ...).

    ``factory(params, *, model, ctx[, tied]) -> torch.nn.Module``: called on every model a run
    builds, right after the model factory, under the same seeded ``init`` stream (random
    streams from ``ctx.generator`` restart for every build), and before the update rule is
    built, so the rule updates the parameters the re-parametrisation exposes. Return the model,
    changed in place (for example with ``torch.nn.utils.parametrize``), or a module wrapping
    it. A run names one in its ``reparametrization`` table, or several in a list of tables
    (applied in order); runs without it are unchanged.

    ``tied``: a factory that declares this keyword is told whether the model is the run's own
    (``False``) or its *tied twin* (``True``), the model whose gradient is the true
    back-propagation gradient of the same weights (the direction diagnostic's reference). A
    re-parametrisation that changes the backward pass only (feedback alignment, a gradient
    hook) must declare it and return the model unchanged when ``tied`` is True; one that
    changes the forward computation (weight standardisation) applies itself either way. One
    that does not declare it is applied to the twin too, and the conformance kit fails it when
    its forward leaves the model's function unchanged but its gradients differ.
    """


@hookspec
def register_executors(register):
    """Register executors: where the runs of a leaderboard execute.

    ``factory(params) -> interfaces.Executor``; ``executor.map(run_one, tasks)`` yields one
    result per task as each finishes. ``run_one`` is a picklable module-level function.
    """


FAMILIES: dict[str, str] = {
    "activations": "register_activations",
    "surrogates": "register_surrogates",
    "update_rules": "register_update_rules",
    "trainers": "register_trainers",
    "datasets": "register_datasets",
    "models": "register_models",
    "reparametrizations": "register_reparametrizations",
    "executors": "register_executors",
}
"""Component family -> the hook that registers it."""
