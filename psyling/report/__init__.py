"""Reporting: terminal tables (and, from ``psyling.fileio``, the atomic table writers the reports use)."""
from ..fileio import write_csv, write_json, write_parquet
from .terminal import format_comparison, format_summary, format_verdicts

__all__ = ["format_comparison", "format_summary", "format_verdicts", "write_csv", "write_json", "write_parquet"]
