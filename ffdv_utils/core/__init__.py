"""Layer 0, the base every stage stands on: paths (the one place that knows where things are), parameter files
and the one source of defaults (``schema``), run records, atomic file writes, metrics, device choice, generic
figures and the papermill runner. Imports nothing from the other subpackages.
"""
