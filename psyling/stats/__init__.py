"""Statistics: prediction accuracy and confidence intervals."""
from .accuracy import wilson_interval
from .predictions import PREDICTION_COLUMNS, SUMMARY_COLUMNS, evaluate_predictions, summarise

__all__ = ["PREDICTION_COLUMNS", "SUMMARY_COLUMNS", "evaluate_predictions", "summarise", "wilson_interval"]
