"""Back-propagation, the baseline every paper shares (plugin ``backprop``).

* activations (:mod:`.activations`): ``identity``, ``relu``, ``logistic``, ``tanh``, ``step``,
  ``sign``, ``softplus``, each with its native derivative (the tied backward);
* update rules (:mod:`.rules`): ``sgd`` (momentum, Nesterov, weight decay) and ``adam``, with
  gradient options (clipping, scaling, noise, dropout, centralisation);
* trainer ``backprop`` (:mod:`.trainer`): mini-batch epochs, mean or summed loss, epochs of a
  fixed number of samples, stop at a target, the direction diagnostic (:mod:`.direction`), and
  grouped runs (:mod:`.grouped`: many small runs as one stacked computation);
* models (:mod:`.models`): ``mlp`` and ``cnn``, built from :mod:`.layers` (dense and conv
  layers, BinaryConnect weights from :mod:`.binary_layers`, pooling, initialisation).

Its mathematics: ``docs/methods/backprop.md``.
"""

from untied_plugins.backprop import activations, models, rules, trainer

from bench_core.hookspecs import hookimpl


@hookimpl
def register_activations(register):
    for name, (description, activation) in activations.ACTIVATIONS.items():
        register(name, lambda params, _a=activation: _a, description=description)


@hookimpl
def register_update_rules(register):
    register("sgd", rules.sgd, params=rules.SGDParams)
    register("adam", rules.adam, params=rules.AdamParams)


@hookimpl
def register_trainers(register):
    register("backprop", trainer.backprop, params=trainer.BackpropParams)


@hookimpl
def register_models(register):
    register("mlp", models.mlp, params=models.MLPParams)
    register("cnn", models.cnn, params=models.CNNParams)
