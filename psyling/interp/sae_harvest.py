"""Token activations for training sparse autoencoders: every text token of stimulus sets and corpora (the context
token and any unscored prefix excluded), at chosen sites, streamed to disk in float16 or float32.

The texts are tokenized exactly as scoring tokenizes them (``CausalScorer.encode``) and batched by its plan
(prefix reuse included); the forward pass stops after the highest block a site needs and skips the output layer
(``ForwardRunner.run_inputs(stop=L)``). Sequences whose tokens repeat an earlier sequence exactly (e.g. the same
sentence in two sets) are harvested once and counted. The output is an activations folder with pool "token"
(``psyling.interp.activations``) plus ``sentences.parquet`` (the harvested texts): read it back shuffled in
bounded memory with ``ReaderSource``."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import PsylingError
from ..models.forward import ForwardRunner, batch_inputs
from ..models.hooks import DTYPES, parse_site
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scorer import ScoreRequest, set_requests
from ..models.scoring import CausalScorer, Encoded
from ..stimuli.schema import StimulusSet
from .activations import ActivationReader, ActivationWriter, sorted_sites


@dataclass(frozen=True)
class HarvestConfig:
    """Sites to capture, the stored dtype, an optional cap on the tokens harvested (sequences are taken in
    order until the cap is reached), whether repeated sequences are dropped, and the shard size."""
    sites: tuple[str, ...] = ("resid.1",)
    dtype: str = "float32"
    max_tokens: Optional[int] = None
    dedupe: bool = True
    shard_bytes: int = 32 * 2**20

    def __post_init__(self) -> None:
        if not self.sites:
            raise PsylingError("harvest: give at least one site")
        for site in self.sites:
            parse_site(site)
        if self.dtype not in DTYPES:
            raise PsylingError(f"harvest: unknown dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")


@dataclass
class HarvestStats:
    """Text tokens stored, sequences harvested and dropped as repeats, tokens run through the model (context
    tokens and shared prefixes included), and seconds."""
    n_tokens: int = 0
    n_sequences: int = 0
    n_repeats: int = 0
    n_computed: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else float("nan")


def harvest_requests(scorer: CausalScorer, requests: Sequence[ScoreRequest], config: HarvestConfig
                     ) -> tuple[list[ScoreRequest], list[Encoded], int]:
    """The requests to harvest with their encodings (repeats dropped, the token cap applied) and the number of
    repeats dropped."""
    kept, encoded, seen, repeats, total = [], [], set(), 0, 0
    for request, enc in zip(requests, scorer.encode_all(list(requests))):
        sequence = tuple(enc.sequence)
        if config.dedupe and sequence in seen:
            repeats += 1
            continue
        if config.max_tokens is not None and total >= config.max_tokens:
            break
        seen.add(sequence)
        kept.append(request)
        encoded.append(enc)
        total += len(enc.ids)
    return kept, encoded, repeats


def harvest(lm: LanguageModel, sets: Sequence[StimulusSet], out: Path, config: HarvestConfig,
            scoring: Optional[ScoringOptions] = None, progress: bool = True) -> HarvestStats:
    """Harvest the text tokens of every item x condition of ``sets`` into the activations folder ``out``."""
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    sites = sorted_sites(config.sites)
    requests = [r for stim in sets for r in set_requests(stim)]
    if not requests:
        raise PsylingError("harvest: the stimuli hold no items")
    kept, encoded, repeats = harvest_requests(scorer, requests, config)
    stats = HarvestStats(n_sequences=len(kept), n_repeats=repeats)
    writer = ActivationWriter(Path(out), sites, pool="token", dtype=config.dtype, shard_bytes=config.shard_bytes)
    runner, stop = ForwardRunner(lm), max(1, max(parse_site(s).layer for s in sites))
    plan = scorer.plan(encoded)
    started = time.perf_counter()
    with tqdm(total=sum(len(e.ids) for e in encoded), desc="harvesting", unit="tok", unit_scale=True,
              disable=not progress) as bar:
        for batch in plan:
            forward = runner.run_inputs(batch_inputs(batch, scorer.padding_side), record=sites, stop=stop)
            recorded = {site: forward.recorded[site].float().cpu().numpy() for site in sites}
            for i, columns in zip(batch.order, forward.columns):
                enc, request = encoded[i], kept[i]
                text_columns = columns[len(enc.context):]
                writer.store(request.key, {site: recorded[site][text_columns] for site in sites},
                             [request.text[s:e] for s, e in enc.offsets], range(len(enc.ids)))
                stats.n_tokens += len(enc.ids)
                bar.update(len(enc.ids))
            stats.n_computed += batch.n_tokens
    stats.seconds = time.perf_counter() - started
    write_sentences(Path(out), kept)
    writer.close({"model": lm.info.get("id"), "sets": [s.name for s in sets], "harvest": asdict(config),
                  "scoring": scorer.settings(), "stats": {**asdict(stats),
                                                           "tokens_per_second": stats.tokens_per_second}})
    return stats


SENTENCES = "sentences.parquet"


def write_sentences(folder: Path, requests: Sequence[ScoreRequest]) -> Path:
    """The harvested texts, one row per request (set, item, condition, text), beside the index: the sentences
    in which top-activating tokens are shown."""
    rows = [(*request.key, request.text) for request in requests]
    table = pd.DataFrame(rows, columns=["set", "item", "condition", "text"])
    table.to_parquet(folder / SENTENCES, index=False)
    return folder / SENTENCES


def read_sentences(folder: Path) -> dict[tuple[str, str, str], str]:
    """(set, item, condition) -> text of a harvest folder's ``sentences.parquet`` (empty when absent)."""
    path = Path(folder) / SENTENCES
    if not path.is_file():
        return {}
    table = pd.read_parquet(path)
    return dict(zip(zip(table["set"], table["item"], table["condition"]), table["text"]))


class ReaderSource:
    """One site of a harvested activations folder as a training source: ``batches`` yields every row once, in a
    random order fixed by the seed, one batch in memory at a time (float32)."""

    def __init__(self, path: Path, site: Optional[str] = None, selection: Optional[np.ndarray] = None) -> None:
        self.reader = ActivationReader(path)
        if site is None and len(self.reader.sites) != 1:
            raise PsylingError(f"{self.reader.folder}: several sites captured ({', '.join(self.reader.sites)}); "
                               "choose one")
        self.site = self.reader.check_sites([site] if site else None)[0]
        self.selection = selection
        self.n_rows = len(self.reader.numbers(selection))
        self.d_in = int(self.reader.shards(self.site)[0].shape[1]) if self.n_rows else 0

    def batches(self, batch_rows: int, seed: int) -> Iterator[np.ndarray]:
        for _, rows in self.reader.iter_batches(self.site, batch_rows, shuffle=True, seed=seed,
                                                selection=self.selection):
            yield rows.astype(np.float32)

    def ordered(self, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(index row numbers, float32 rows) in index order, for evaluation and top contexts."""
        for numbers, rows in self.reader.iter_batches(self.site, batch_rows, selection=self.selection):
            yield numbers, rows.astype(np.float32)
