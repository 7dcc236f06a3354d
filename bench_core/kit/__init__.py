"""The plugin conformance kit (``untied check-plugin``; :func:`bench_core.testing.assert_plugin_conforms`):
the checks (:mod:`.check`), the family checks (:mod:`.families`), the capability checks
(:mod:`.capabilities`), its tiny runs (:mod:`.runs`) and its partner components
(:mod:`.partners`); and a tracer of peak tensor memory for plugins' tests and benchmarks of
memory claims (:mod:`.memory`).
"""
