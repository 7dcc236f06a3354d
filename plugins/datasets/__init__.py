"""Datasets every paper may use (plugin ``datasets``), read from local files where they are,
downloaded only where allowed (:func:`bench_core.data.find_data_folder` looks for them):

* ``digits`` (:mod:`.digits`): scikit-learn's bundled 8x8 digits;
* ``mnist`` and ``fashion_mnist`` (:mod:`.images`): IDX files;
* ``cifar10`` and ``cifar100`` (:mod:`.cifar`): the binary or Python versions;
* ``wine_quality`` and ``california_housing`` (:mod:`.tabular`): UCI tables, standardised on
  the training split, targets x 0.1 (Wang 2025's preparation).

Where each comes from and how to get it offline: ``docs/methods/index.md`` (section Data).
"""

from untied_plugins.datasets import cifar, digits, images, tabular

from bench_core.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register("digits", digits.digits, params=digits.DigitsParams)
    register("mnist", images.mnist, params=images.ImageDatasetParams)
    register("fashion_mnist", images.fashion_mnist, params=images.ImageDatasetParams)
    register("cifar10", cifar.cifar10, params=cifar.CifarParams)
    register("cifar100", cifar.cifar100, params=cifar.Cifar100Params)
    register("wine_quality", tabular.wine_quality, params=tabular.WineParams)
    register("california_housing", tabular.california_housing, params=tabular.HousingParams)
