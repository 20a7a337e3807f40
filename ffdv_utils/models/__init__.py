"""Detectors: ``create_model(params)`` (``registry``) builds every model type from a run's parameters; backbones,
heads, the synchrony head, the MaRLe relation model, the 200M-parameter rule, checkpoint loading.
"""

from .checkpoint import checkpoint_path, load_model
from .registry import MODEL_TYPES, build_model, create_model, model_inputs, parameter_count
from .rules import MAX_PARAMS, ModelRuleError, check_size, count_parameters
