"""Reporting: run-directory outputs and terminal tables."""
from .outputs import TABLES, write_csv, write_json, write_parquet, write_run, write_tables
from .terminal import format_comparison, format_summary, format_verdicts

__all__ = ["TABLES", "format_comparison", "format_summary", "format_verdicts", "write_csv", "write_json",
           "write_parquet", "write_run", "write_tables"]
