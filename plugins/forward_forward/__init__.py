"""Forward-Forward (Hinton 2022, "The Forward-Forward Algorithm: Some Preliminary
Investigations", arXiv:2212.13345; docs/methods/forward-forward.md).

Registers the trainer ``forward_forward``, supervised FF as in Section 3.3, for any model that
exposes its hidden layers as blocks (:mod:`bench_core.layered`; the built-in ``mlp`` and
``cnn`` do):

* the label is embedded in the input: the first ``C`` features of each sample are replaced by a
  one-hot of the label times the largest value of the training inputs (Section 3.3 puts a
  one-of-N code in the first 10 pixels of MNIST; the scale is our choice, so the code is as
  bright as the brightest pixel); positive data carry the true label, negative data a wrong one
  drawn uniformly from the others per sample and step from the run's seeded stream
  ``forward_forward.negatives`` (:mod:`.goodness`);
* every block's input is divided by its L2 length (Section 2.1, no mean subtracted), its
  goodness is the sum of its squared outputs and its loss the logistic loss of Section 2, eq. 1,
  ``softplus(theta - g_pos) + softplus(g_neg - theta)``, with ``theta`` = ``threshold`` or, by
  default, the block's output values per sample (a mean squared activity of 1);
* every block's input is detached: no gradient crosses blocks; all blocks train together on
  each batch (their losses summed, one step of the run's update rule per batch, so ``sgd``,
  ``adam`` or any other rule that reads ``.grad``);
* prediction (Section 3.3): each label embedded in turn, the goodness summed over blocks (the
  first block left out when ``skip_first_layer``, the default as in the paper), the argmax.

Logged per epoch: ``train_loss`` (the FF loss summed over blocks, per-sample mean),
``test_accuracy`` and ``test_ff_loss`` (the same loss with the negative term averaged over all
wrong labels) for the test split and every further evaluation set. There is no ``test_loss``:
goodness gives no class probabilities. The model's own output layer is not trained or used.
"""

from __future__ import annotations

from untied_plugins.forward_forward.trainer import ForwardForwardParams, forward_forward

from bench_core.hookspecs import hookimpl


@hookimpl
def register_trainers(register):
    register("forward_forward", forward_forward, params=ForwardForwardParams)
