"""Leaderboard specs shipped with untied-bench (installed as ``bench_core.leaderboards``), so
``untied run quickstart`` works from an installed wheel as well as from a clone."""
