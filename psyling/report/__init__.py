"""Reporting: run-directory outputs and terminal tables."""
from .outputs import TABLES, write_run, write_tables
from .terminal import format_summary

__all__ = ["TABLES", "format_summary", "write_run", "write_tables"]
