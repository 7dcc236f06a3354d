"""Leaderboard specs: the spec model and its loading (:mod:`.model`, imports no torch), the
expansion of a spec into validated runs (:mod:`.plan`) and the conventions of metric names
(:mod:`.metrics`).
"""
