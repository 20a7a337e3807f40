"""The detector: a run's final score as one object -- the network, the scores fitted beside it (real-only,
self-supervised: ``Scorer`` classes registered with ``register_scorer``) and their join -- saved and loaded as one
checkpoint. Training builds it, scoring, the test API and the protocols load it.
"""

from .detector import NETWORK, Detector, load_detector
from .profile_part import ProfileScorer, profile_signatures
from .real_only import RealOnlyModel, RealOnlyScorer, combine
from .scorers import SCORERS, Part, Scorer, register_scorer, scorers_from_params
