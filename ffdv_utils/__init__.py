"""FFDV deepfake-detection workspace: shared helpers for the numbered notebooks.

Modules follow the data flow: config (paths, params) -> data / media (labels, decoding) -> features (cache)
-> datasets -> models -> train -> predict (submission, test API); metrics and plots alongside.
"""

__version__ = "0.1.0"
