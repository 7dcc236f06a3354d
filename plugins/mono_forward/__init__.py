"""Mono-Forward with autograd (MF+AD) and with zeroth-order directional derivatives (MF+DD)
(docs/methods/mono-forward.md; the poster "Mono-Forward with zeroth-order directional derivatives",
``papers/mono-forward-zeroth-order-poster.md``; Mono-Forward: Gong, Li & Abdulla 2025).

Registers the trainer ``mono_forward``. It trains any model that exposes its hidden layers as
blocks (:mod:`bench_core.layered`; the built-in ``mlp`` and ``cnn`` do), each block ``l`` on its
own loss, the block's input detached (no gradient crosses blocks):

* goodness ``G_l = a_l M_l^T`` with a trained projection ``M_l`` (classes x width), for conv
  blocks after fixed random projections of the activations, one per channel by default
  (``projection_dim``, ``projection``) (poster, "Layerwise Loss"; :mod:`.readout`);
* local loss ``L_l = -sum_c y_c log softmax(G_l)_c``;
* MF+AD (``estimator = "autograd"``): ``W_l <- W_l - eta dL_l/dW_l``,
  ``M_l <- M_l - eta dL_l/dM_l`` (poster, "Weight Updates (AD)"; :mod:`.estimators`);
* MF+DD (``estimator = "directional"``): the same updates with the gradient replaced by
  ``n / P sum_p [(L(w + eps v_hat_p) - L(w - eps v_hat_p)) / (2 eps)] v_hat_p`` over chunks ``w``
  of at most ``chunk_size`` entries of ``W_l`` and ``M_l``, Gaussian or Rademacher directions (poster section 2, "Directional Derivative-Based Approach"; docs/methods/mono-forward.md
  section 4), with no autograd: the whole step runs under ``torch.inference_mode()`` and no
  tensor ever holds ``.grad`` (:mod:`.directional`, which also explains how the P directions and
  both signs of every chunk are evaluated in one batched computation);
* blocks train jointly (every block on every batch) or greedily (``schedule``);
* predictions: ``cumulative`` (argmax of the summed softmax of all blocks' goodness, the poster's
  primary metric) as ``test_accuracy`` and ``final`` (last block's goodness) as
  ``test_accuracy_final``, with ``test_loss`` / ``test_loss_final`` every epoch (the test split is
  the validation set of the curves, as in the ``backprop`` trainer); ``train_seconds`` is the
  time spent in training steps (evaluation excluded).

The model's own output layer is not trained or used (Mono-Forward predicts from the ``M_l``).
Updates are plain SGD with ``lr`` (the run's update rule is not used: it works on ``.grad``),
optionally on a step schedule (``lr_milestones``, ``lr_gamma``: as the ``backprop`` trainer's).
Both estimators use the same schedule, data order, initial weights and ``M_l``, so MF+AD vs
MF+DD isolates the gradient estimate. Every epoch logs, per block, ``weight_norm/<block>``,
``projection_norm/<block>`` and ``dead_units/<block>`` (diagnostics, so a collapse is visible).
The forward counters record, per batch, the clean forward plus every perturbed local-loss
evaluation of DD (``2P`` per chunk). ``direction_diagnostic`` logs, per block, the cosine
between the DD estimate and the autograd gradient (``cos/<block>``, ``direction_cosine``: the
metric family of :mod:`untied_plugins.backprop.direction`).

Not supported on the fast path: blocks whose ``post`` has parameters (BatchNorm) or whose layer
is not exactly ``nn.Linear``/``nn.Conv2d`` (BinaryConnect) fall back to the naive loop of 2P
block forwards per chunk; with BatchNorm those perturbed forwards also update its running
statistics.
"""

from __future__ import annotations

from untied_plugins.mono_forward.trainer import MonoForwardParams, mono_forward

from bench_core.hookspecs import hookimpl


@hookimpl
def register_trainers(register):
    register("mono_forward", mono_forward, params=MonoForwardParams, version="2")
