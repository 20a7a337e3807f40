"""FFDV deepfake-detection workspace: the package the numbered notebooks call.

Subpackages follow the data flow, and imports only run downward (``tests/test_import_layers.py``)::

    core < sample_data < media < data < pseudo < models < features < selfsup < detector < training < inference
         < experiments < packaging < bench < cli

See docs/structure.md.
"""

__version__ = "0.1.0"
