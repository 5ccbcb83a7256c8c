"""Turn an event log into one row per case prefix: features known after each event, plus the targets.

Every prefix of every case is produced (lengths 1..n); the target of the full-length prefix is the end-of-case
class, so "will the case end now?" is learned and scored like any other next step.

- `encoder.py`: `PrefixEncoder`, which learns a training log's vocabularies and encodes any log with them;
- `pandas_path.py` / `python_path.py`: its two encoding paths (any size / small live inputs), same features;
- `data.py`: what it produces (`PrefixSet`, `PrefixMatrix`, `feature_matrix`) and the feature names;
- `leakage.py`: which columns a prefix may read (`trace_attribute_problem`, `check_prefix_columns`).
"""

from insight.models.prefix_features.data import END, PrefixMatrix, PrefixSet, feature_matrix
from insight.models.prefix_features.encoder import PrefixEncoder
from insight.models.prefix_features.leakage import check_prefix_columns, trace_attribute_problem
from insight.models.prefix_features.python_path import SMALL_INPUT_ROWS

__all__ = ["END", "SMALL_INPUT_ROWS", "PrefixEncoder", "PrefixMatrix", "PrefixSet", "check_prefix_columns",
           "feature_matrix", "trace_attribute_problem"]
