"""``bench_core.grouping.plain_sequence``: which containers a grouped path may treat as the plain
chain of their children (toy modules only, no built-in method)."""

from __future__ import annotations

from torch import nn

from bench_core.grouping import plain_sequence


class WithView(nn.Sequential):
    """Adds a method and an attribute, leaves the computation alone."""

    def __init__(self, *layers):
        super().__init__(*layers)
        self.note = "blocks"

    def blocks(self):
        return list(self)


class OwnForward(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 2


class OwnIteration(nn.Sequential):
    def __iter__(self):
        return reversed(list(self._modules.values()))


class Deeper(WithView):
    pass


def layers():
    return [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)]


def test_a_sequential_and_a_subclass_that_adds_a_view_are_plain():
    for cls in (nn.Sequential, WithView, Deeper):
        chain = layers()
        assert plain_sequence(cls(*chain)) == chain


def test_a_subclass_that_changes_the_computation_is_not():
    assert plain_sequence(OwnForward(*layers())) is None
    assert plain_sequence(OwnIteration(*layers())) is None
    assert plain_sequence(nn.ModuleList(layers())) is None
    assert plain_sequence(nn.Linear(3, 4)) is None


def test_hooks_or_a_forward_on_the_instance_make_it_not_plain():
    hooked = WithView(*layers())
    hooked.register_forward_pre_hook(lambda module, args: None)
    assert plain_sequence(hooked) is None
    replaced = nn.Sequential(*layers())
    replaced.forward = lambda x: x
    assert plain_sequence(replaced) is None
