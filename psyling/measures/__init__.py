"""Measures: token -> word -> region surprisal."""
from .alignment import Alignment, align
from .surprisal import (REGION_COLUMNS, TOKEN_COLUMNS, WORD_COLUMNS, surprisal_tables, token_contributions,
                        word_surprisals)

__all__ = ["Alignment", "REGION_COLUMNS", "TOKEN_COLUMNS", "WORD_COLUMNS", "align", "surprisal_tables",
           "token_contributions", "word_surprisals"]
