"""Typed records: one frozen dataclass per artifact kind and per result, checked when built, written to and
read from JSON here and nowhere else (`to_json()`, `from_json()`)."""

from w2s_cli.store.records.result import *  # noqa: F403
from w2s_cli.store.records.result import RecordError, read_record  # noqa: F401
