"""Stimulus sets: schema, on-disk formats, importers and batteries."""
from .formula import FormulaError, evaluate, parse_formula
from .io import LoadedStimuli, battery_files, load_set, load_stimuli, stimuli_root
from .schema import Condition, HumanFinding, Item, Prediction, StimulusSet
from .syntaxgym import load_syntaxgym, to_syntaxgym
from .blimp import load_blimp

__all__ = ["Condition", "FormulaError", "HumanFinding", "Item", "LoadedStimuli", "Prediction", "StimulusSet",
           "battery_files", "evaluate", "load_blimp", "load_set", "load_stimuli", "load_syntaxgym",
           "parse_formula", "stimuli_root", "to_syntaxgym"]
