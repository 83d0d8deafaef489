"""Statistics: prediction accuracy, confidence intervals and the SyntaxGym score."""
from .accuracy import wilson_interval
from .predictions import PREDICTION_COLUMNS, SUMMARY_COLUMNS, evaluate_predictions, summarise
from .sg_score import item_passes, sg_score, suite_accuracy

__all__ = ["PREDICTION_COLUMNS", "SUMMARY_COLUMNS", "evaluate_predictions", "item_passes", "sg_score",
           "suite_accuracy", "summarise", "wilson_interval"]
