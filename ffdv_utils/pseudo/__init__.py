"""Pseudo-fakes: training samples made from real training clips, along each axis a deepfake can break.

The rules allow extra training samples generated from the released training set, provided the tools are handed in:
this stage is that tool (``families.py``). It works on the uint8 cache data of one batch (face crops, mouth crops,
mel image) in the loader, deterministically per (seed, epoch, clip), optionally confined
to one segment of the clip (partial manipulations), and says which branch each change concerns.
"""

from .families import FAMILIES, PSEUDO_VERSION, PseudoFakes, family_of, localize, pseudo_from_params

__all__ = ["FAMILIES", "PSEUDO_VERSION", "PseudoFakes", "family_of", "localize", "pseudo_from_params"]
