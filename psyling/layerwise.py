"""Layer-wise analyses on top of runs: probes on a run's stored activations, plots of a run's logit lens, and
per-layer encoding of a human target (ERP, reading times) in the UCL corpus (``psyling probe``, ``psyling lens``,
``psyling encode``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from .errors import PsylingError
from .interp.activations import load_activations
from .interp.encoding import encode_layers
from .interp.lens import lens_accuracy
from .interp.probes import labels_from_conditions, probe_layers
from .models import CaptureSpec, LanguageModel, ModelSpec
from .report.interp_plots import layer_curve, prediction_chance
from .runs import activations_folder, read_run, run_sets, write_sub_output
from .stimuli.corpora import UCL_MEASURES

# human target (a schema HUMAN_MEASURES name) -> its column in the UCL corpus: what ``psyling encode`` predicts
ENCODE_TARGETS = {measure: column for measure, (column, _) in UCL_MEASURES.items()}
ENCODE_BASELINE = ["word_length", "zipf_freq", "word_position", "sentence_final"]


def probe_run(run_dir: Union[str, Path], factor: str, sets: Sequence[str] = (), stimuli: Sequence[str] = (),
              region: Optional[str] = None, folds: int = 5, n_permutations: int = 100,
              plots: bool = True) -> pd.DataFrame:
    """Probe every captured site for a condition factor (e.g. ``number``) over the sets that declare it (and,
    with ``region``, have a region of that name: only its rows are probed, e.g. the verb). Writes
    RUN_DIR/interp/probe_FACTOR[_REGION].parquet and a PNG; rows of other sets are not used."""
    run_dir = Path(run_dir)
    manifest, _ = read_run(run_dir)
    stims, _ = run_sets(manifest, stimuli, run_dir)
    chosen = [s for s in stims if factor in s.factors and (not sets or s.name in sets)
              and (region is None or region in s.regions)]
    if not chosen:
        have = sorted({f for s in stims for f in s.factors})
        where = f" and has a region {region!r}" if region else ""
        raise PsylingError(f"no set of this run declares the factor {factor!r}{where} "
                           f"(factors: {', '.join(have) or 'none'})")
    meta, features = load_activations(activations_folder(run_dir), sets=[s.name for s in chosen])
    if region is not None:
        if set(meta["pool"]) != {"region"}:
            raise PsylingError(f"{run_dir}: probing a region needs activations pooled per region (--pool region)")
        number = {s.name: s.regions.index(region) + 1 for s in chosen}
        keep = (meta["position"] == meta["set"].map(number)).to_numpy()
        meta, features = meta[keep].reset_index(drop=True), {k: v[keep] for k, v in features.items()}
    labels = pd.concat([labels_from_conditions(meta[meta["set"] == s.name], {k: list(v) for k, v in s.factors.items()},
                                               list(s.conditions), factor) for s in chosen])
    meta = meta.assign(label=labels.reindex(meta.index), group=meta["set"] + "/" + meta["item"].astype(str))
    table = probe_layers(features, meta, "label", group="group", folds=folds, n_permutations=n_permutations)
    name = f"interp/probe_{factor}" + (f"_{region}" if region else "")
    labelled = table.assign(sets=",".join(s.name for s in chosen))
    write_sub_output(run_dir, f"{name}.parquet", lambda p: labelled.to_parquet(p, index=False), manifest)
    if plots:
        title = f"probe for {factor}{f' at {region}' if region else ''} ({', '.join(s.name for s in chosen)})"
        write_sub_output(run_dir, f"{name}.png", lambda p: layer_curve(
            table, ["accuracy", "control_accuracy", "selectivity"], p, title), manifest)
    return table


def lens_plots(run_dir: Union[str, Path]) -> list[Path]:
    """Per set, the accuracy of its predictions read out at each lens layer (RUN_DIR/interp/lens_SET.png)."""
    run_dir = Path(run_dir)
    path = run_dir / "lens_predictions.parquet"
    if not path.is_file():
        raise PsylingError(f"{run_dir}: no logit-lens tables (run psyling run --lens or psyling lens)")
    predictions = pd.read_parquet(path)
    formulas = predictions.groupby("set", sort=False)["prediction"].unique()
    paths = []
    for name, table in lens_accuracy(predictions).groupby("set", sort=False):
        long = table.assign(site=[f"resid.{layer}" for layer in table["layer"]], metric="accuracy",
                            value=table["accuracy"])
        chance = prediction_chance(list(formulas[name]))
        paths.append(write_sub_output(run_dir, f"interp/lens_{name}.png", lambda p: layer_curve(
            long, ["accuracy"], p, f"logit lens: {name}", chance=chance)))
    return paths


def encode_corpus(model: Union[str, ModelSpec, LanguageModel], target: str = "ERP-N400",
                  out: Union[str, Path, None] = None, layers: Optional[Sequence[int]] = None,
                  data_root: Optional[Path] = None, folds: int = 10, n_permutations: int = 200,
                  progress: bool = True, replace: bool = False) -> pd.DataFrame:
    """Score the UCL corpus with activation capture (word-pooled residual stream) and fit a cross-validated
    ridge encoding model of the human ``target`` (ERP-N400, SPR or eye-tracking first-pass time) per layer
    over a baseline of word length, log frequency, position in the sentence and sentence-final position.
    Writes the run to OUT (``replace``: replacing a run there) and OUT/interp/encode_TARGET.parquet and .png."""
    from .api import run
    from .stats.regression import baseline_predictors
    from .stimuli.batteries import data_root as default_root
    from .stimuli.corpora import load_ucl

    if target not in ENCODE_TARGETS:
        raise PsylingError(f"unknown encoding target {target!r} (choose from {', '.join(ENCODE_TARGETS)})")
    if out is None:
        raise PsylingError("encode needs an output folder (--out)")
    out = Path(out)
    corpus = load_ucl(Path(data_root) if data_root else default_root())
    run(model, stimuli=[corpus.stimuli], out=out, progress=progress, replace=replace,
        activations=CaptureSpec(("resid",), tuple(layers) if layers else None))
    meta, features = load_activations(out)
    words = baseline_predictors(corpus.words)
    # sentence-final words carry wrap-up effects (in the UCL N400 alone they explain R² ≈ 0.2): in the baseline
    words["sentence_final"] = (words["word_index"] == words.groupby("item")["word_index"].transform("max"))
    joined = meta.merge(words, left_on=["item", "position"], right_on=["item", "word_index"], how="left",
                        validate="1:1")
    values = joined[ENCODE_TARGETS[target]].to_numpy(float)
    baseline = joined[ENCODE_BASELINE].to_numpy(float)
    table = encode_layers(features, values, joined["item"].to_numpy(), baseline, folds=folds,
                          n_permutations=n_permutations)
    table = table.assign(target=target, corpus="UCL")
    write_sub_output(out, f"interp/encode_{target}.parquet", lambda p: table.to_parquet(p, index=False))
    write_sub_output(out, f"interp/encode_{target}.png", lambda p: layer_curve(
        table, ["delta_r2"], p, f"encoding of UCL {target} per layer (ΔR² over length, frequency, position)",
        chance=0.0))
    return table


def best_layer(table: pd.DataFrame, metric: str) -> tuple[str, float]:
    """The site with the highest value of ``metric`` (a tidy probe table or a wide encoding table)."""
    if "metric" in table.columns:
        table = table[table["metric"] == metric].rename(columns={"value": metric})
    row = table.iloc[int(np.nanargmax(table[metric].to_numpy(float)))]
    return str(row["site"]), float(row[metric])
