"""The one source of parameter defaults.

Every parameter a notebook declares, the training command reads or a model is built from is declared here once,
in groups. ``tools/build_notebooks.py`` writes each notebook's ``parameters`` cell and ``params/NN_name.yaml``
from ``NOTEBOOK_GROUPS``; ``python -m ffdv_utils train`` starts from ``notebook_defaults("03_train")``, so it and
notebook 03 resolve the same parameters. The stages read their parameters as typed groups (``core.params``:
``TrainingParams.of(params)``...), filled from these defaults, or fill what a caller left out with
``with_defaults(params, GROUP)`` and read keys directly (a test keeps ``params.get("key", literal)`` for a key
declared here out of the package).

Values are plain YAML-able literals (papermill injects them into the ``parameters`` cell).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

# run: where results go and where the data is
RUN: dict[str, Any] = {"run_name": "default", "data_root": None}

# features: the cache key of mel images and face crops (``mel_<field>`` / ``face_<field>`` fine-tune any field of
# ``features.params.MEL_PRESETS`` / ``FACE``)
FEATURES: dict[str, Any] = {"mel_preset": "default", "image_size": 256, "feature_workers": None, "face_frames": 8,
                            "face_size": 112, "face_detector": "haar"}

# every face-crop field (``face_<field>`` keys override them; frames / size / detector are in FEATURES too)
FACE: dict[str, Any] = {
    "frames": 8,          # evenly spaced frames per clip
    "size": 112,          # output crop side (pixels)
    "margin": 0.25,       # extra context around the detected box, as a fraction of its side, per side
    "detector": "haar",   # "haar" (OpenCV's bundled frontal-face cascade), "center" (no detection) or "mtcnn"
                          # (facenet-pytorch's MTCNN: eye-aligned crops, mouth crops and 5 landmarks per frame)
    "work_size": 360,     # frames are decoded with this shorter side (FFmpeg scales while converting)
    "detect_width": 256,  # detection runs on a copy this wide (speed; grey for haar); boxes are mapped back
    "min_face": 0.12,     # smallest face side considered, as a fraction of the frame's shorter side
    "center_scale": 0.8,  # fallback crop side as a fraction of the frame's shorter side
    # how the crops are stored (features.cache): "raw" (uint8 arrays, as before these fields: same cache keys),
    # "png" (lossless) or "jpeg" at ``quality`` (1-100; only jpeg reads it). Part of the cache key.
    "codec": "raw",
    "quality": 90,
    # mtcnn only (left out of the resolved haar / center parameters, so their cache keys do not change):
    "detect_frames": 4,   # full MTCNN on this many evenly spaced frames per clip (0: all); the rest are tracked
    "smooth": 3,          # moving average over this many frames of the eye position, distance and angle
    "mouth_size": 48,     # mouth crop side (pixels)
    "mouth_scale": 2.0,   # mouth crop side as a multiple of the clip's median mouth-corner distance
    "device": "cpu",      # "cpu", or "cuda" (used where CUDA is available)
}

# model: what ``models.registry.create_model`` builds. ``pretrained``: false, true (timm's download), a weights file or
# ``package:efficientnet_lite0`` (lite1, lite2: weights inside a registry package; ``models.pretrained``).
# ``input_norm``: the scaling the backbone's weights want, re-mapped from the ImageNet-normalised batches: ``auto``
# (from ``pretrained``), ``imagenet``, ``inception`` ((x - 0.5) / 0.5) or {mean: [...], std: [...]}.
# ``freeze_backbone``: false, true, audio or visual -- those backbones keep their pretrained weights, their outputs are
# computed once per clip into the feature cache (``features.embeddings``) and only the heads train (the CPU path).
# ``profile_bins`` / ``profile_faces``: model_type ``profile`` (``models.profile``: a linear score on the speech
# spectrum's shape in that many bands and, with faces, the steadiness of the face's sharpness)
MODEL: dict[str, Any] = {
    "model_type": "audio", "model": "resnet18", "pretrained": False, "input_norm": "auto", "freeze_backbone": False,
    "visual_model": None,
    "aggregate": "attention", "topk": 3, "dropout": 0.0, "branch_loss": 0.3, "fusion_head": "mlp", "sync": True,
    "sync_dim": 64, "modality_dropout": 0.0, "max_params": None,
    "marle_stage": 2, "marle_regions": 4, "marle_dim": 128, "marle_hidden": 128, "marle_mask": "min",
    "marle_mask_ratio": 0.3, "marle_div_weight": 0.1, "marle_tc_weight": 0.1, "marle_audio": "none",
    "profile_bins": 32, "profile_faces": True,
}

# training: the public baseline's recipe (Adam 3e-3, StepLR(4, 0.85), 10 epochs, batch 40, flips) and the runtime.
# ``pseudo_fakes``: {family: probability} of turning a real training clip into a pseudo-fake (``ffdv_utils.pseudo``:
# face_blend, voice, av_offset, mouth_reorder, splice); ``pseudo_fakes_off``: families switched off (protocols);
# ``pseudo_variants``: how many variants of a (clip, family) exist (their frozen embeddings are cached once);
# ``pseudo_local``: the probability that a pseudo-fake is confined to one segment of the clip (partial manipulation).
# ``real_only_weight``: w > 0 fits the real-only score on the real training clips (``detector.real_only``) and the
# run scores (1 - w) * model + w * real-only, in validation and in the test API; ``real_only_groups``: which groups
# of statistics it uses (``features.statistics.STAT_GROUPS``)
# ``profile_weight``: w > 0 fits the profile part (``detector.profile_part``: the profile detector's signatures in a
# logistic regression on the training clips, its audio image ``profile_mel_preset``) and joins it with weight w
TRAINING: dict[str, Any] = {
    "epochs": 10, "batch_size": 40, "optimizer": "adam", "lr": 3.0e-3, "weight_decay": 0.0, "scheduler": "step",
    "step_size": 4, "gamma": 0.85, "warmup_epochs": 0, "loss": "bce", "focal_gamma": 2.0, "pos_weight": None,
    "label_smoothing": 0.0, "augment": "baseline", "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "mix_prob": 1.0,
    "av_swap_prob": 0.0, "pseudo_fakes": {}, "pseudo_fakes_off": [], "pseudo_variants": 4,
    "pseudo_local": 0.0, "real_only_weight": 0.0, "profile_weight": 0.0, "profile_mel_preset": "wide",
    "real_only_groups": ["sync", "voice", "face", "prosody", "consistency", "local"], "select_metric": "auc",
    "seed": 42,
    "device": "auto", "amp": "auto", "channels_last": True,
    "compile": False, "deterministic": False, "num_workers": 0, "drop_last": False, "find_unused_parameters": False,
    "dist_timeout_min": 180, "max_train_clips": None, "resume": True, "progress": True, "split_csv": None,
}

# what ``training.loop.fit`` reads: a run's model is fully described by these
TRAIN_DEFAULTS: dict[str, Any] = {**RUN, **FEATURES, **MODEL, **TRAINING}

# the clips to score
TEST_CLIPS: dict[str, Any] = {"test_dir": "testset", "test_template": None}

# inference: scoring, ensembles, fallbacks
INFERENCE: dict[str, Any] = {"runs": None, "ensemble": "mean", "tta": 1, "fallback_score": 0.5, "device": "auto"}

EDA: dict[str, Any] = {"mel_preset": "default", "probe_workers": None, "max_clips": None, "n_examples": 4, "seed": 0}
EXTRACTION: dict[str, Any] = {"inputs": ["mel"], "splits": ["train", "val", "test"]}
EXPLANATION: dict[str, Any] = {"n_explain": 2, "kinds_csv": None}
AUGMENT_VARIANTS: dict[str, Any] = {
    "variants": [{"name": "none", "augment": "none"}, {"name": "baseline", "augment": "baseline"},
                 {"name": "spec", "augment": "spec"}, {"name": "spec_mixup", "augment": "spec", "mixup_alpha": 0.4},
                 {"name": "spec_cutmix", "augment": "spec", "cutmix_alpha": 1.0}],
    "variant_epochs": 5, "n_show": 4, "seed": 0}
CANDIDATES: dict[str, Any] = {
    "candidates": [{"name": "audio", "model_type": "audio", "av_swap_prob": 0.0},
                   {"name": "visual", "model_type": "visual", "av_swap_prob": 0.0},
                   {"name": "fusion", "model_type": "fusion", "av_swap_prob": 0.4},
                   {"name": "marle", "model_type": "marle", "marle_audio": "both", "av_swap_prob": 0.4}],
    "shared": {}}
# ``eval_protocols``: plain, held_out_kind, held_out_identity (needs an identity column in ``kinds_csv``), cluster,
# test; ``cluster_folds``: folds of the cluster and held_out_identity protocols; ``seed``: the clustering's;
# ``seeds``: training seeds per (candidate, split) -- a count (the 03 seed and the ones after it) or a list; the
# leaderboard reports mean +- sd over them (use >= 3 to compare; 1 keeps the demo fast)
# ``groups_csv`` / ``group_column`` / ``group_folds``: the grouped protocol's groups (any column of a CSV keyed by
# video_name; a labelled folder's labels.csv when unset) and its folds (0: leave-one-group-out);
# ``floors``: the rows every candidate must beat (``experiments.floors``: baseline, metadata);
# ``floor_baseline_pretrained``: a local ImageNet-1K resnet18 weights file for the baseline floor (random init without)
PROTOCOLS: dict[str, Any] = {"eval_protocols": ["plain", "held_out_kind", "cluster", "test"], "kinds_csv": None,
                             "test_labels": None, "n_clusters": 6, "cluster_folds": 2, "seed": 0, "seeds": 1,
                             "groups_csv": None, "group_column": "source", "group_folds": 5,
                             "floors": ["baseline", "metadata"], "floor_baseline_pretrained": None}
BACKBONES: dict[str, Any] = {
    "backbones": [{"name": "resnet18", "model": "resnet18"}, {"name": "efficientnet_b0", "model": "efficientnet_b0"},
                  {"name": "mobilenetv3_large_100", "model": "mobilenetv3_large_100"}],
    "backbone_overrides": {}}
ANSWERS: dict[str, Any] = {"test_labels": None, "test_kinds": None}

# each notebook's parameters cell: (comment, group) in order; a key in two groups takes the later value
NOTEBOOK_GROUPS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "01_eda": [("run", RUN), ("exploration", EDA)],
    "02_features": [("run", RUN), ("features", FEATURES), ("what to extract", EXTRACTION), ("test clips", TEST_CLIPS),
                    ("display", {"n_show": 8})],
    "03_train": [("run", RUN), ("features", FEATURES), ("model", MODEL), ("training", TRAINING),
                 ("explanation", EXPLANATION)],
    "04_augment": [("run", RUN), ("variants", AUGMENT_VARIANTS)],
    "05_compare": [("run", RUN), ("candidates", CANDIDATES), ("protocols", PROTOCOLS),
                   ("backbones: 03_train executed through papermill once each, plain split", BACKBONES)],
    "06_submission": [("run", RUN), ("test clips", TEST_CLIPS), ("prediction", INFERENCE),
                      ("answers (sample data only)", ANSWERS)],
}


def notebook_defaults(notebook: str) -> dict[str, Any]:
    """Every parameter of ``notebook`` with its default (a deep copy: callers may change it)."""
    if notebook not in NOTEBOOK_GROUPS:
        raise KeyError(f"no notebook {notebook!r}; known: {', '.join(NOTEBOOK_GROUPS)}")
    out: dict[str, Any] = {}
    for _, group in NOTEBOOK_GROUPS[notebook]:
        out.update(copy.deepcopy(group))
    return out


def with_defaults(params: Mapping[str, Any] | None, *groups: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every key of ``groups`` it lacks (or holds as None where the default is not None) filled.

    A None for a key whose default is a value means "not set" (a YAML ``null``, an unset notebook parameter),
    so readers can index the result directly instead of ``params.get(key, literal)``.
    """
    out = dict(params or {})
    for group in groups:
        for key, default in group.items():
            if out.get(key) is None and default is not None:
                out[key] = copy.deepcopy(default)
            else:
                out.setdefault(key, copy.deepcopy(default))
    return out


def declared_keys() -> set[str]:
    """Every key some group declares (FACE's fields as ``face_<field>``)."""
    keys = {f"face_{k}" for k in FACE}
    for name, value in globals().items():
        if name.isupper() and isinstance(value, dict) and name not in ("NOTEBOOK_GROUPS", "FACE"):
            keys |= set(value)
    return keys
