"""Scoring (notebook 06_submission): batch scoring of a run's detector with TTA and ensembles, ``prediction.csv``
writing and validation, and the test API (``score_video``, ``VideoScorer``).
"""

from .score import (
    VideoScorer,
    ensemble,
    predict_clips,
    predict_runs,
    score_table,
    score_video,
    score_videos,
    video_scorer,
)
from .submission import (
                         SubmissionError,
                         evaluate_prediction,
                         validate_submission,
                         write_prediction_record,
                         write_submission,
)
