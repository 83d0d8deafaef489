"""Models: loading (aliases, folders, GGUF, hub ids), the forward runner and its hooks, and the causal and
masked scorers."""
from .architecture import LensHead, architecture, n_layers
from .embedded import DEFAULT_MODEL, EMBEDDED
from .forward import ForwardPass, ForwardRunner
from .hooks import KINDS, CaptureSpec, Intervention, Site, parse_site
from .loading import LanguageModel, load_model
from .masked import MaskedScorer
from .options import ModelSpec, ScoringOptions
from .registry import SCORERS, invariance_check, make_scorer
from .scorer import ScoreRequest, ScoreResult, Scorer, ScoreStats, TokenScores
from .scoring import CausalScorer
from .vocab import WordMarkers, word_markers

__all__ = ["KINDS", "SCORERS", "CaptureSpec", "CausalScorer", "DEFAULT_MODEL", "EMBEDDED", "ForwardPass",
           "ForwardRunner", "Intervention", "LanguageModel", "LensHead", "MaskedScorer", "ModelSpec", "ScoreRequest",
           "ScoreResult", "ScoreStats", "Scorer", "ScoringOptions", "Site", "TokenScores", "WordMarkers",
           "architecture", "invariance_check", "load_model", "make_scorer", "n_layers", "parse_site",
           "word_markers"]
