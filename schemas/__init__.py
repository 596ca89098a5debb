"""Every record that crosses a stage boundary or lands on disk, in one place.

Each record is a plain dataclass; `arrow_schema(cls)` derives its pyarrow schema from the
type hints, so the Parquet files and the dataclasses can never drift apart. Bump
SCHEMA_VERSION whenever a field changes meaning or is removed.
"""
from schemas.records import (  # noqa: F401
    SCHEMA_VERSION,
    ErrorRow,
    FailedVideo,
    ManifestRow,
    RunSummary,
    Sample,
    Segment,
    ShardStats,
    Transcript,
    Unit,
    UrlRow,
    VideoRecord,
    VideoResult,
    WindowRecord,
    WindowRollup,
    Word,
    arrow_schema,
    from_dict,
    to_table,
)
