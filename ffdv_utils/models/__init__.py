"""Networks: ``create_model(params)`` (``registry``) builds every ``model_type`` registered with ``register_model``
(``registration``) from a run's parameters; backbones, heads, the synchrony head, the MaRLe relation model, the
200M-parameter rule, the checkpoint format.
"""

from .checkpoint import Checkpoint, checkpoint_path, load_model, load_network
from .registration import MODELS, register_model
from .registry import MODEL_TYPES, build_model, create_model, model_inputs, parameter_count
from .rules import MAX_PARAMS, ModelRuleError, check_size, count_parameters
