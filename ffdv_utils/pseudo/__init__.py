"""Pseudo-fakes: training samples made from real training clips, along each axis a deepfake can break.

The rules allow extra training samples generated from the released training set, provided the tools are handed in:
this stage is that tool (``families.py``). It works on the uint8 cache data of one batch (face crops, mouth crops,
mel image) in the loader, deterministically per (seed, epoch, clip), and says which branch each change concerns.
"""

from .families import FAMILIES, PseudoFakes, family_of

__all__ = ["FAMILIES", "PseudoFakes", "family_of"]
