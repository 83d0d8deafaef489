"""Readers for the released files of the SAP benchmark (Huang, Arehalli, Kugemoto, Muxica, Prasad, Linzen &
Dillon; self-paced reading with 2,000 participants; repository caplabnyu/sapbenchmark).

``root`` is the benchmark's folder, ``DATA_ROOT/sap_benchmark_huang2024``. Every reader raises
:class:`PsylingError` naming the file when it is missing or malformed."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PsylingError, first_line

SAP_FOLDER = "sap_benchmark_huang2024"
SURPRISAL_MODELS = ("gpt2", "lstm")
SURPRISAL_SUBSETS = ("Agreement", "AttachmentAmbiguity", "ClassicGP", "RelativeClause", "filler", "plaus")
EFFECT_SUBSETS = ("Agreement", "AttachmentAmbiguity", "ClassicGP", "RelativeClause")
EFFECT_SOURCES = {"human": "", "gpt2": "_gpt2", "lstm": "_lstm"}
# The column giving the critical word of each sentence, and the index it counts from. Checked against the
# released words: only ClassicGP's "disambPosition_0idx" is 0-indexed; Agreement's column of that name, like
# AttachmentAmbiguity's and RelativeClause's "targetPosition" (the embedded verb), counts from 1. As released,
# RelativeClause item 42's object relative points one word before its embedded verb (a two-noun subject).
CRITICAL_WORD = {"ClassicGP": ("disambPosition_0idx", 0), "Agreement": ("disambPosition_0idx", 1),
                 "AttachmentAmbiguity": ("disambPosition_0idx", 1), "RelativeClause": ("targetPosition", 1)}
SURPRISAL_COLUMNS = ["subset", "model", "item", "condition", "sentence", "word_pos", "word", "token",
                     "surprisal", "critical"]
EFFECT_COLUMNS = ["construction", "roi", "mean", "lower", "upper"]
TRIAL_COLUMNS = ("participant", "item", "Type", "pGram", "ROI", "RT", "RT_corrected")
# Trial-level (Type, pGram) -> (subset, condition) of the released surprisal; trial items are numbered as the
# surprisal files' items (checked: each trial Sentence is the released sentence of that item and condition).
TRIAL_CONDITIONS = {("AGREE", "G"): ("Agreement", "AGREE"), ("AGREE", "U"): ("Agreement", "UNAGREE"),
                    ("NPZ", "G"): ("ClassicGP", "NPZ_UAMB"), ("NPZ", "U"): ("ClassicGP", "NPZ_AMB")}


def _read_csv(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise PsylingError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError,
            zlib.error) as exc:
        raise PsylingError(f"{path}: cannot read the table: {first_line(exc)}") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise PsylingError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def _numeric(table: pd.DataFrame, column: str, path: Path, integer: bool = False) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna()
    if integer:
        bad |= values % 1 != 0
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise PsylingError(f"{path}: column {column} is not a{'n integer' if integer else ' number'} in data row "
                           f"{row + 1}: {table[column].iloc[row]!r}")
    return values.astype(int) if integer else values.astype(float)


def surprisal_path(root: Path, subset: str, model: str = "gpt2") -> Path:
    """The released word-level surprisal file of one subset and model."""
    if subset not in SURPRISAL_SUBSETS:
        raise PsylingError(f"unknown SAP subset {subset!r} (known: {', '.join(SURPRISAL_SUBSETS)})")
    if model not in SURPRISAL_MODELS:
        raise PsylingError(f"no SAP surprisal in bits for model {model!r} (known: {', '.join(SURPRISAL_MODELS)})")
    return Path(root) / "Surprisals" / "data" / model / f"items_{subset}.{model}.csv"


def load_sap_surprisal(root: Path, subset: str, model: str = "gpt2") -> pd.DataFrame:
    """One row per word of every released sentence: subset, model, item, condition ('' for fillers and the
    plausibility items), sentence, word_pos (0-indexed), word, token (subword pieces joined by '.'),
    surprisal (bits, summed over the word's pieces) and critical (the disambiguating / critical word)."""
    path = surprisal_path(root, subset, model)
    position = CRITICAL_WORD.get(subset)
    required = ("item", "Sentence", "word", "token", "word_pos", "sum_surprisal_base2")
    required += ("condition", position[0]) if position else ()
    raw = _read_csv(path, required, index_col=0, keep_default_na=False)
    table = pd.DataFrame({
        "subset": subset, "model": model, "item": _numeric(raw, "item", path, integer=True).to_numpy(),
        "condition": raw["condition"].astype(str).to_numpy() if position else "",
        "sentence": raw["Sentence"].astype(str).to_numpy(),
        "word_pos": _numeric(raw, "word_pos", path, integer=True).to_numpy(),
        "word": raw["word"].astype(str).to_numpy(), "token": raw["token"].astype(str).to_numpy(),
        "surprisal": _numeric(raw, "sum_surprisal_base2", path).to_numpy(),
        "critical": False,
    }, columns=SURPRISAL_COLUMNS)
    if position:
        column, base = position
        table["critical"] = table["word_pos"].to_numpy() == _numeric(raw, column, path, integer=True).to_numpy() - base
        found = table.groupby(["item", "condition"], sort=False)["critical"].sum()
        if (found != 1).any():
            item, condition = found[found != 1].index[0]
            raise PsylingError(f"{path}: item={item} condition={condition}: column {column} does not point at "
                               f"exactly one word of the sentence")
    return table


def load_sap_effects(root: Path, subset: str, source: str = "human") -> pd.DataFrame:
    """The published effects by construction and ROI (ms, posterior mean and 95% CrI): the human effects
    (``source="human"``) or the reading-time effects predicted from GPT-2 or LSTM surprisal."""
    if subset not in EFFECT_SUBSETS:
        raise PsylingError(f"unknown SAP subset {subset!r} (known: {', '.join(EFFECT_SUBSETS)})")
    if source not in EFFECT_SOURCES:
        raise PsylingError(f"unknown SAP effect source {source!r} (known: {', '.join(EFFECT_SOURCES)})")
    path = Path(root) / "plots" / "spr" / subset / f"by_construction{EFFECT_SOURCES[source]}.csv"
    return _effects(path)


def load_sap_trial_fit(root: Path) -> pd.DataFrame:
    """The authors' mixed-model effects fitted to exactly the released trial-level data (construction "Agr":
    agreement, "GPE": the NP/Z garden path), in the columns of :func:`load_sap_effects`."""
    return _effects(Path(root) / "analysis" / "spr" / "Agreement" / "datasets" / "by_construction_agreement.csv")


def _effects(path: Path) -> pd.DataFrame:
    raw = _read_csv(path, ("ROI", "coef", "mean", "lower", "upper"))
    table = pd.DataFrame({"construction": raw["coef"].astype(str), "roi": _numeric(raw, "ROI", path, integer=True),
                          **{c: _numeric(raw, c, path) for c in ("mean", "lower", "upper")}}, columns=EFFECT_COLUMNS)
    return table.sort_values(["construction", "roi"], ignore_index=True)


def load_sap_trials(root: Path) -> pd.DataFrame:
    """The released trial-level self-paced reading data of the Agreement and NP/Z subsets at ROIs 0-2 (one row
    per participant x word), with the file's columns: Type (AGREE / NPZ), pGram (U: ungrammatical or
    ambiguous, G: grammatical or unambiguous), item, participant, ROI, RT and RT_corrected (RT minus the
    trial-number trend fitted on fillers, the authors' dependent variable), among others."""
    path = Path(root) / "analysis" / "spr" / "Agreement" / "datasets" / "agreement_data.csv.gz"
    table = _read_csv(path, TRIAL_COLUMNS)
    for column in ("item", "ROI", "RT"):
        table[column] = _numeric(table, column, path, integer=True)
    table["RT_corrected"] = _numeric(table, "RT_corrected", path)
    return table


def join_sap_trials(trials: pd.DataFrame, words: pd.DataFrame) -> pd.DataFrame:
    """The trial rows (:func:`load_sap_trials`) with the released word-level surprisal (:func:`load_sap_surprisal`,
    any subsets concatenated) of the word each row reports, and of the word before it. Added columns: subset,
    condition, word_pos (0-indexed: the file's WordPosition counts from 1), word and surprisal (the released word
    at that position), prev_word, surprisal_prev1 and join_status: "ok" when the released word equals the trial's
    EachWord and the released sentence its Sentence (or Sentence is empty), else "word differs", "sentence
    differs" or "no such word" (with NaN surprisal). Every trial row is kept; callers count the rows not "ok"."""
    needed = ["Type", "pGram", "item", "WordPosition", "EachWord", "Sentence"]
    missing = [c for c in needed if c not in trials.columns]
    if missing:
        raise PsylingError(f"SAP trials: missing column(s) {', '.join(missing)}")
    keys = list(zip(trials["Type"], trials["pGram"]))
    unknown = sorted({f"{t}/{g}" for t, g in keys if (t, g) not in TRIAL_CONDITIONS})
    if unknown:
        raise PsylingError(f"SAP trials: unknown Type/pGram {', '.join(unknown)} (known: "
                           f"{', '.join(f'{t}/{g}' for t, g in TRIAL_CONDITIONS)})")
    index = ["subset", "item", "condition", "word_pos"]
    released = words[index + ["sentence", "word", "surprisal"]]
    if released.duplicated(index).any():
        raise PsylingError("SAP surprisal: (subset, item, condition, word_pos) is not unique")
    out = trials.assign(subset=[TRIAL_CONDITIONS[k][0] for k in keys],
                        condition=[TRIAL_CONDITIONS[k][1] for k in keys],
                        word_pos=trials["WordPosition"].to_numpy() - 1)
    here = out[index].merge(released, on=index, how="left")
    before = out[index].assign(word_pos=out["word_pos"] - 1).merge(released, on=index, how="left")
    sentence = out["Sentence"].to_numpy()
    status = np.select([here["word"].isna(), here["word"].to_numpy() != out["EachWord"].to_numpy(),
                        out["Sentence"].notna().to_numpy() & (here["sentence"].to_numpy() != sentence)],
                       ["no such word", "word differs", "sentence differs"], "ok")
    ok = status == "ok"
    return out.assign(word=here["word"].to_numpy(), surprisal=here["surprisal"].where(ok).to_numpy(),
                      prev_word=before["word"].to_numpy(), surprisal_prev1=before["surprisal"].where(ok).to_numpy(),
                      join_status=status)


def load_sap_trial_surprisal(root: Path, model: str = "gpt2") -> pd.DataFrame:
    """:func:`load_sap_trials` joined to the released ``model`` surprisal of the Agreement and ClassicGP subsets
    by :func:`join_sap_trials`."""
    subsets = sorted({subset for subset, _ in TRIAL_CONDITIONS.values()})
    words = pd.concat([load_sap_surprisal(root, subset, model) for subset in subsets], ignore_index=True)
    return join_sap_trials(load_sap_trials(root), words)
