"""Features and the batches made from them (notebook 02_features): mel images and face crops, their on-disk cache
and parallel extraction, ``clip_features`` / ``open_features`` over the cache, and the batch reader that
training and inference share (``batches``, which alone imports torch).
"""

# torch-free on purpose: the extraction workers import this package (batches.py, the torch part, is not here)
from .clips import clip_features, extraction_report, open_features
from .extract import DiskFullError, extract_faces, extract_mels
from .params import FACE_DEFAULTS, MEL_PRESETS, face_params, mel_params
