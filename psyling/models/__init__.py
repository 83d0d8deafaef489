"""Models: loading (aliases, folders, GGUF, hub ids), batched scoring of causal and masked LMs."""
from .embedded import DEFAULT_MODEL, EMBEDDED
from .loading import LanguageModel, load_model
from .capture import KINDS, CaptureSpec
from .masked import MaskedScorer
from .scoring import Scorer, ScoreRequest, TokenScores
from .vocab import WordMarkers, word_markers

__all__ = ["KINDS", "CaptureSpec", "DEFAULT_MODEL", "EMBEDDED", "LanguageModel", "MaskedScorer", "ScoreRequest",
           "Scorer", "TokenScores", "WordMarkers", "load_model", "word_markers"]
