"""psyling: artificial psycholinguistics -- human sentence-processing experiments run on language models."""
__version__ = "0.1.0"

from .api import RunResult, evaluate, run  # noqa: E402

__all__ = ["RunResult", "evaluate", "__version__", "run"]
