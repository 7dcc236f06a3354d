"""The built-in plugins of untied-bench, one module per component family.

Each module is registered through the ``untied`` entry-point group in ``pyproject.toml``,
exactly as a third-party package registers its plugins; the host imports none of them directly.
This directory is installed as the package ``untied_plugins``.
"""
