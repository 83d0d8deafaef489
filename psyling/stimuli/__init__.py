"""Stimulus sets: schema, on-disk formats, importers and batteries."""
from .batteries import Battery, battery_files, battery_names, data_root, load_battery, stimuli_root
from .blimp import load_blimp
from .corpora import ReadingCorpus, load_natural_stories, load_ucl, naturalstories_gpt3_surprisal
from .formula import FormulaError, evaluate, parse_expression, parse_formula
from .io import LoadedStimuli, load_set, load_sets, load_stimuli
from .reading import ReaderOptions
from .schema import Condition, HumanFinding, Item, Prediction, StimulusSet
from .syntaxgym import load_syntaxgym, to_syntaxgym
from .tables import load_climp, load_ettinger, load_marvin_linzen, load_pairs_csv
from .textpairs import load_text_pairs

__all__ = [
    "Battery", "Condition", "FormulaError", "HumanFinding", "Item", "LoadedStimuli", "Prediction", "ReadingCorpus",
    "StimulusSet", "battery_files", "battery_names", "data_root", "evaluate", "load_battery", "load_blimp",
    "load_climp", "load_ettinger", "load_marvin_linzen", "load_natural_stories", "load_pairs_csv", "load_set",
    "load_sets", "load_stimuli", "load_syntaxgym", "load_ucl", "naturalstories_gpt3_surprisal", "parse_expression",
    "parse_formula", "ReaderOptions", "stimuli_root", "load_text_pairs", "to_syntaxgym",
]
