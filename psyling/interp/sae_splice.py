"""A sparse autoencoder spliced into the forward pass: the reconstruction metrics and the cross-entropy and KL
recovered on stimulus text, and effect preservation on a battery.

The SAE replaces its site's activation at every position but the first (the context token, on which it was not
trained). One clean pass per batch of sequences (scoring's tokenization and plan) records the site and the
next-token log-probabilities of every text token; the spliced passes (reconstruction, zeros) start from the
recorded residual stream when the site is one (``ForwardRunner.run_inputs(start=...)``), else rerun the model
with the site replaced. In float64 over all text tokens T (nats per token):
CE = -mean_T log p(token); KL = mean_T KL(p_clean || p_spliced);
ce_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), kl_recovered = (KL_zero - KL_sae) / KL_zero.
The first text token is predicted from the unspliced context token and contributes equally to every CE (it
changes the CEs, not the recovered fractions). The reconstruction metrics (``sae_metrics``) come from the same
pass's activations at the text tokens.

Effect preservation on a battery is in ``sae_effects``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import PsylingError
from ..models.forward import ForwardRunner, ModelInputs, batch_inputs, place
from ..models.hooks import Intervention, Placed, parse_site
from ..models.loading import LanguageModel
from ..models.options import ScoringOptions
from ..models.scorer import set_requests
from ..models.scoring import CausalScorer, Encoded
from ..stimuli.schema import StimulusSet
from .sae import SparseAutoencoder
from .sae_metrics import DENSE_THRESHOLD, reconstruction_stats

AFTER_CONTEXT = slice(1, None)  # every position of a sequence but its first (the context token)


def splice(sae: SparseAutoencoder, change: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> Intervention:
    """The SAE at its site, every position but the context token: its reconstruction, or with ``change`` the
    latents changed and the reconstruction error kept (an identity change reproduces the model bitwise)."""
    fn = sae.reconstruction() if change is None else sae.edit(change)
    return Intervention(sae.config.site, "map", fn, positions=AFTER_CONTEXT)


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


@dataclass
class SpliceSums:
    """Summed next-token cross-entropies and KL divergences (nats) over the text tokens seen so far."""
    n_tokens: int = 0
    ce_clean: float = 0.0
    ce_sae: float = 0.0
    ce_zero: float = 0.0
    kl_sae: float = 0.0
    kl_zero: float = 0.0

    def result(self) -> dict[str, float]:
        n = self.n_tokens
        ce = {k: getattr(self, k) / n for k in ("ce_clean", "ce_sae", "ce_zero")}
        kl = {k: getattr(self, k) / n for k in ("kl_sae", "kl_zero")}
        ce_gap, kl_gap = ce["ce_zero"] - ce["ce_clean"], kl["kl_zero"]
        return {**ce, **kl, "ce_loss_increase": ce["ce_sae"] - ce["ce_clean"],
                "ce_recovered": (ce["ce_zero"] - ce["ce_sae"]) / ce_gap if ce_gap else float("nan"),
                "kl_recovered": (kl["kl_zero"] - kl["kl_sae"]) / kl_gap if kl_gap else float("nan"),
                "n_predicted": n}


def _positions(inputs: ModelInputs, encoded: Sequence[Encoded]) -> tuple[list[int], list[int], list[int]]:
    """Flat positions that predict each text token, the tokens, and the text tokens' own positions."""
    read, targets, text = [], [], []
    for enc, columns in zip(encoded, inputs.columns):
        n = len(enc.context)
        read += columns[n - 1:n - 1 + len(enc.ids)]
        targets += enc.ids
        text += columns[n:]
    return read, targets, text


def _spliced_logits(runner: ForwardRunner, inputs: ModelInputs, recorded: torch.Tensor, placed: Placed,
                    read: torch.Tensor) -> torch.Tensor:
    """Logits at ``read`` with the site replaced: from the recorded stream for a residual site, else rerun."""
    site = parse_site(placed.intervention.site)
    if site.kind != "resid" or site.layer == 0:
        return runner.run_inputs(inputs, interventions=[placed], read=read).logits
    hidden = recorded.clone()
    hidden[placed.flat] = placed.intervention.value(recorded[placed.flat]).to(hidden.dtype)
    rows, width = inputs.input_ids.shape
    return runner.run_inputs(inputs, start=(site.layer, hidden.view(rows, width, -1)), read=read).logits


def _add_ce_kl(sums: SpliceSums, clean: torch.Tensor, sae: torch.Tensor, zero: torch.Tensor,
               targets: torch.Tensor) -> None:
    """Add one batch's cross-entropies and KL divergences (float64) to ``sums``."""
    logp = {name: torch.log_softmax(v.double(), dim=-1) for name, v in
            (("clean", clean), ("sae", sae), ("zero", zero))}
    rows = torch.arange(len(targets))
    for name in logp:
        setattr(sums, f"ce_{name}", getattr(sums, f"ce_{name}") - float(logp[name][rows, targets].sum()))
    p_clean = logp["clean"].exp()
    sums.kl_sae += float((p_clean * (logp["clean"] - logp["sae"])).sum())
    sums.kl_zero += float((p_clean * (logp["clean"] - logp["zero"])).sum())
    sums.n_tokens += len(targets)


def _spliced_batches(lm: LanguageModel, sae: SparseAutoencoder, scorer: CausalScorer, encoded: list[Encoded],
                     sums: SpliceSums, progress: bool) -> Iterator[torch.Tensor]:
    """Per planned batch: CE and KL added to ``sums``; yields the site's activations at the text tokens."""
    runner, site = ForwardRunner(lm), sae.config.site
    plan = scorer.plan(encoded)
    with tqdm(total=sum(len(e.ids) for e in encoded), desc="SAE splicing", unit="tok", unit_scale=True,
              disable=not progress) as bar:
        for batch in plan:
            inputs = batch_inputs(batch, scorer.padding_side)
            chosen = [encoded[i] for i in batch.order]
            read, targets, text = (torch.tensor(v, dtype=torch.long) for v in _positions(inputs, chosen))
            clean = runner.run_inputs(inputs, record=[site], read=read)
            recorded = clean.recorded[site]
            logits = [_spliced_logits(runner, inputs, recorded, p, read) for p in
                      place([splice(sae), Intervention(site, "map", _zeros, positions=AFTER_CONTEXT)], inputs)]
            _add_ce_kl(sums, clean.logits, *logits, targets)
            bar.update(len(targets))
            yield recorded[text]


def evaluate_sae(lm: LanguageModel, sae: SparseAutoencoder, sets: Sequence[StimulusSet],
                 scoring: Optional[ScoringOptions] = None, dense_threshold: float = DENSE_THRESHOLD,
                 progress: bool = True) -> dict[str, Any]:
    """The reconstruction metrics and CE / KL recovered of an SAE on every item x condition of ``sets``."""
    check_site(lm, sae)
    scorer = CausalScorer(lm, scoring or ScoringOptions(), progress=False)
    requests = [r for stim in sets for r in set_requests(stim)]
    if not requests:
        raise PsylingError("SAE evaluation: the stimuli hold no items")
    sums = SpliceSums()
    stats = reconstruction_stats(sae, _spliced_batches(lm, sae, scorer, scorer.encode_all(requests), sums,
                                                       progress), dense_threshold)
    return {**stats.result(), **sums.result(), "site": sae.config.site}


def check_site(lm: LanguageModel, sae: SparseAutoencoder) -> None:
    """A one-line error when the SAE's width does not match its site in this model."""
    d_model = lm.model.config.hidden_size
    site = parse_site(sae.config.site)
    if site.kind in ("resid", "attn", "mlp") and sae.config.d_in != d_model:
        raise PsylingError(f"SAE for {sae.config.site} reads {sae.config.d_in} dimensions; the model's "
                           f"{site.kind} stream has {d_model}")
