"""Read CSV / XES / Parquet event logs onto the canonical schema (column mapping, timestamps to UTC).

- `read.py`: `read_log`, the one entry point; it maps a source onto the canonical columns;
- `detect.py`: which format a file is; `csv_file.py`, `xes.py`, `parquet.py`: one reader per format;
- `presets.py`: how known public logs are read; `columns.py`: the column mapping and value types;
- `timestamps.py`: timestamp format inference and conversion to UTC.
"""

from insight.eventlog.readers.detect import LogFormat, detect_format
from insight.eventlog.readers.parquet import PARQUET_META_KEY
from insight.eventlog.readers.presets import PRESETS, Preset
from insight.eventlog.readers.read import read_log

__all__ = ["PARQUET_META_KEY", "PRESETS", "LogFormat", "Preset", "detect_format", "read_log"]
