"""Statistics: accuracy and comparisons, SyntaxGym scores, mixed-effects models, the human comparison and
reading-time / ERP regressions. Imports nothing from the model stage (no torch)."""
from .accuracy import wilson_interval
from .compare import (BootstrapResult, McNemarResult, accuracy_by, benjamini_hochberg, compare_models, mcnemar,
                      paired_bootstrap)
from .human import Linking, compare_with_humans
from .lmer import MixedFit, lmer
from .mixed import condition_effects, crossed_intercepts
from .predictions import PREDICTION_COLUMNS, SUMMARY_COLUMNS, evaluate_predictions, item_values, summarise
from .regression import (DeltaLL, LinkingFunction, MixedDeltaLL, add_spillover, baseline_predictors, delta_loglik,
                         fit_linking, mixed_delta_loglik)
from .sg_score import battery_score_rows, item_passes, sg_score, suite_accuracy

__all__ = ["BootstrapResult", "DeltaLL", "Linking", "LinkingFunction", "McNemarResult", "MixedDeltaLL", "MixedFit",
           "PREDICTION_COLUMNS", "SUMMARY_COLUMNS", "accuracy_by", "add_spillover", "baseline_predictors",
           "battery_score_rows", "benjamini_hochberg", "compare_models", "compare_with_humans", "condition_effects",
           "crossed_intercepts", "delta_loglik", "evaluate_predictions", "fit_linking", "item_passes", "item_values",
           "lmer", "mcnemar", "mixed_delta_loglik", "paired_bootstrap", "sg_score", "suite_accuracy", "summarise", "wilson_interval"]
