"""Surrogate derivatives of the spiking- and binary-network libraries (plugin
``library_surrogates``): snnTorch's arctangent (``atan``), fast sigmoid (``superspike``: the
name ``fast_sigmoid`` is the CONTRIBUTING walkthrough's own) and sigmoid with slope
(``sigmoid_slope``), and Larq's ``approx_sign`` and ``swish_sign`` gradients of binary
networks. Each replaces the activation's derivative by a closed-form ``g(x)`` in
back-propagation (:mod:`.surrogates`, with the formulas and their sources); the forward
activation is the run's. Mathematics and usage: ``docs/methods/perturbation.md`` section 4.
"""

from untied_plugins.library_surrogates import surrogates

from bench_core.hookspecs import hookimpl


@hookimpl
def register_surrogates(register):
    for name, (factory, params) in surrogates.SURROGATES.items():
        register(name, factory, params=params, version=surrogates.VERSION)
