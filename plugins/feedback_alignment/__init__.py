"""The feedback-alignment family (docs/methods/feedback-alignment.md): methods that send the
error down a network through other weights than ``W^T``, as reparametrizations that apply to
the dense and convolutional layers of any model, with any activation, surrogate, update rule
and dataset:

* ``feedback_alignment``: a fixed random ``B`` per layer (Lillicrap et al. 2016);
* ``direct_feedback_alignment``: the output error to every layer through its own fixed random
  matrix (Noekland 2016);
* ``sign_symmetry``: ``sign(W) o M`` with uniform, batchwise-random or fixed-random
  magnitudes ``M`` (Liao, Leibo & Poggio 2016; Moskovitz et al. 2018).

Each layer reports, per epoch, the angle between ``W`` and its backward weights and their norm
ratio (``alignment_angle/<layer>``, ``norm_ratio/<layer>`` and their means over layers,
:func:`bench_core.interfaces.module_measurements`); the ``backprop`` trainer's
``direction_diagnostic`` gives the angle between each update and the true gradient.
"""

from untied_plugins.feedback_alignment import methods

from bench_core.hookspecs import hookimpl


@hookimpl
def register_reparametrizations(register):
    register("feedback_alignment", methods.feedback_alignment,
             params=methods.FeedbackParams,
             description="fixed random feedback B in place of W^T (Lillicrap et al. 2016)")
    register("direct_feedback_alignment", methods.direct_feedback_alignment,
             params=methods.FeedbackParams,
             description="output error to every layer through a fixed random B_l "
                         "(Noekland 2016)")
    register("sign_symmetry", methods.sign_symmetry, params=methods.SignSymmetryParams,
             description="sign(W) o M in place of W^T (Liao et al. 2016; Moskovitz et al. 2018)")
