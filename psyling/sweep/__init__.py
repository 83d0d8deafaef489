"""Sweeps: many models × revisions × sets × settings into a resumable result store (psyling sweep)."""
