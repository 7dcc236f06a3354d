"""Troiano et al. (2025), "Breaking the conventional forward-backward tie in neural networks:
activation functions" (plugin ``troiano``): every component its experiments add to the
back-propagation baseline.

* surrogates (:mod:`.surrogates`): ``tied``, ``constant``, ``rect``, ``triangular``,
  ``d_logistic``: a backward function ``g`` in place of the activation's derivative;
* jamming surrogates (:mod:`.jamming`): ``full_jamming``, ``positive_jamming``,
  ``rect_jamming``: random backward magnitudes;
* weight reparametrizations (:mod:`.reparametrizations`): ``weight_normalization``,
  ``weight_standardization``, ``weight_centralization`` (eqs. 13-15);
* models (:mod:`.models`): the single-unit classifier ``suc`` and ``lenet5``;
* dataset ``ones`` (:mod:`.ones`), the synthetic task of Section 4.4.

Its mathematics, choices and deviations: ``docs/methods/troiano.md``; its leaderboards:
``leaderboards/troiano-*.toml``.
"""

from untied_plugins.troiano import jamming, models, ones, reparametrizations, surrogates

from bench_core.hookspecs import hookimpl


@hookimpl
def register_surrogates(register):
    for name, (factory, params) in surrogates.SURROGATES.items():
        register(name, factory, params=params)
    register("full_jamming", jamming.full_jamming, params=jamming.FullJammingParams)
    register("positive_jamming", jamming.positive_jamming, params=jamming.PositiveJammingParams)
    register("rect_jamming", jamming.rect_jamming, params=jamming.RectJammingParams)


@hookimpl
def register_reparametrizations(register):
    register("weight_normalization", reparametrizations.weight_normalization,
             params=reparametrizations.ReparametrizationParams)
    register("weight_standardization", reparametrizations.weight_standardization,
             params=reparametrizations.WeightStandardizationParams)
    register("weight_centralization", reparametrizations.weight_centralization,
             params=reparametrizations.ReparametrizationParams)


@hookimpl
def register_models(register):
    register("suc", models.suc, params=models.SUCParams)
    register("lenet5", models.lenet5, params=models.LeNet5Params)


@hookimpl
def register_datasets(register):
    register("ones", ones.ones, params=ones.OnesParams)
