"""What clips exist and what is known about them: label files and templates, the media index, the shortcut
audit, manipulation kinds and train / eval splits (notebook 01_eda).
"""

from .audit import shortcut_audit
from .index import leading_silence, leading_silence_column, media_index
from .kinds import attach_kinds, read_kinds
from .labels import (
                     DataError,
                     DataWarning,
                     canonical_name,
                     clips_for_splits,
                     labelled_frame,
                     list_test,
                     load_split,
                     pick_examples,
                     read_labels,
                     read_template,
                     subsample,
)
from .splits import Split, labelled_clips, read_split, write_split
