"""Comparisons (notebooks 04_augment and 05_compare): the one candidate loop, augmentation variants, evaluation
protocols and their leaderboard, the lip-sync cue.
"""

from .augment import augment_examples, example_batch, run_variants
from .candidates import (
    base_train_params,
    leaderboard_frame,
    run_candidates,
    save_leaderboard,
    seed_list,
    train_variant,
)
from .joins import joined_candidates, plot_weight_sweep, weight_sweep
from .protocol_report import (
    detail_table,
    leaderboard_display,
    plot_protocol_rocs,
    protocol_curves,
    protocol_intervals,
    protocol_leaderboard,
)
from .protocols import HELD_OUT_PAIRING, run_protocols
from .sync_cue import plot_sync_cue, sync_cue_summary, sync_cue_table
