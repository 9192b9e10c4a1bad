"""Bridges for frameworks whose instrumentation never makes its spans current.

Each submodule imports its framework lazily, so importing it never fails when the
framework is absent; its functions then behave like the top-level ones.
"""
