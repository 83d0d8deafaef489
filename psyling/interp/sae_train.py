"""Training sparse autoencoders (``psyling.interp.sae``) on activation rows read in shuffled batches.

The recipe follows Gao et al. (2024, "Scaling and evaluating sparse autoencoders"):
- initialisation: random unit-norm decoder rows, the encoder their transpose (``SparseAutoencoder.from_init``),
  b_dec the geometric median (or mean) of a sample of the data;
- every step: the gradient component parallel to each decoder row is removed, Adam steps, and the decoder rows
  are scaled back to unit norm;
- reconstruction loss: Σ‖x − x̂‖² / (n σ²), σ² = E‖x − μ‖² measured once on the initialisation sample, so the
  loss is a fraction of variance unexplained with a fixed denominator (lr and coefficients do not depend on the
  scale of the activations);
- TopK and BatchTopK add ``aux_coeff`` x AuxK: the top ``aux_k`` pre-activations of the dead latents (no
  activation in the last ``dead_tokens`` training tokens) reconstruct the error e = x − x̂ (detached), normalised
  as Gao et al.'s released code does: ‖e − ê‖² / ‖e − ē‖² over the batch;
- BatchTopK (Bussmann et al. 2024) selects the k x n largest pre-activations of a batch; the inference threshold
  (``sae.threshold``) is their estimate, the mean over batches of the smallest selected positive activation,
  measured after training with the final weights on ``sample_rows`` rows in training-size batches (a running
  average during training would lag behind the weights in short runs);
- ReLU adds ``l1_coeff`` x E_token[Σ_i z_i ‖W_dec,i‖] / σ: the decoder-norm-weighted L1 of Anthropic's April 2024
  update, which equals the plain L1 here because the decoder rows are kept at unit norm.

Deterministic given the seed on CPU (same thread count); ``resume=True`` continues from the latest checkpoint
and ends with the same weights, bitwise, as an uninterrupted run."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional, Protocol, Union

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import PsylingError
from .sae import SPARSE_K, SAEConfig, SparseAutoencoder

TRAINABLE = ("topk", "batchtopk", "relu")
B_DEC_INITS = ("geometric_median", "mean", "zeros")
SAE_FIELDS = ("site", "model", "apply_b_dec_to_input", "metadata")
HISTORY_COLUMNS = ["step", "tokens", "loss", "mse", "fvu", "aux_loss", "l1", "l0", "dead_fraction", "seconds"]
Rows = Union[np.ndarray, torch.Tensor]
SAMPLE_PASS = 2**31 - 1  # the seed stream of the data sample (b_dec, σ², threshold), apart from every training pass


class SAETrainingError(PsylingError):
    """A training configuration, data source or checkpoint that cannot be used."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train an SAE. ``None`` fields are resolved from the data (``resolved``):
    - latents = 8 x d_in; lr = 2e-4 / sqrt(latents / 2^14) (Gao et al.'s scaling); aux_k = d_in / 2 (Gao et al.);
    - n_tokens = one pass over the data (more passes reshuffle, with a seed per pass);
    - dead_tokens = n_tokens / 10, at least one batch and at most Gao et al.'s 10M;
    - l1_coeff = 5 / sqrt(d_in) for ReLU (0 otherwise): Anthropic's λ = 5 for inputs scaled to E‖x‖² = d_in,
      rewritten for this module's normalised loss.
    ``batch_size`` is in tokens (rows) per step. ``b_dec_init`` is "geometric_median" (Gao et al.), "mean" or
    "zeros", over ``sample_rows`` shuffled rows (which also give σ² and the BatchTopK threshold). ``grad_clip``
    caps the gradient's global norm (None: no clipping; with the normalised loss the norm is usually well below
    1, so the default only stops spikes). Adam's betas and eps are Gao et al.'s. The lr warms up linearly over
    ``lr_warmup_steps`` and decays linearly to 0 over the last ``lr_decay_fraction`` of the steps (Anthropic's
    April 2024 recipe decays over the last 20%). ``checkpoint_every`` is in steps (None: no checkpoints)."""
    architecture: str = "topk"
    latents: Optional[int] = None
    k: int = 32
    lr: Optional[float] = None
    batch_size: int = 4096
    n_tokens: Optional[int] = None
    seed: int = 0
    aux_k: Optional[int] = None
    aux_coeff: float = 1 / 32
    dead_tokens: Optional[int] = None
    l1_coeff: Optional[float] = None
    b_dec_init: str = "geometric_median"
    sample_rows: int = 32768
    grad_clip: Optional[float] = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 6.25e-10
    lr_warmup_steps: int = 0
    lr_decay_fraction: float = 0.2
    checkpoint_every: Optional[int] = 1000

    def __post_init__(self) -> None:
        if self.architecture not in TRAINABLE:
            raise SAETrainingError(f"TrainConfig.architecture: cannot train {self.architecture!r} (choose from "
                                   f"{', '.join(TRAINABLE)})")
        if self.b_dec_init not in B_DEC_INITS:
            raise SAETrainingError(f"TrainConfig.b_dec_init: {self.b_dec_init!r} is not one of "
                                   f"{', '.join(B_DEC_INITS)}")
        positive = {"latents": self.latents, "k": self.k, "lr": self.lr, "batch_size": self.batch_size,
                    "n_tokens": self.n_tokens, "aux_k": self.aux_k, "dead_tokens": self.dead_tokens,
                    "sample_rows": self.sample_rows, "grad_clip": self.grad_clip, "adam_eps": self.adam_eps,
                    "checkpoint_every": self.checkpoint_every}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise SAETrainingError(f"TrainConfig.{name} must be positive (got {value})")
        if self.aux_coeff < 0 or (self.l1_coeff or 0) < 0:
            raise SAETrainingError(f"TrainConfig: aux_coeff and l1_coeff must be >= 0 "
                                   f"(got {self.aux_coeff}, {self.l1_coeff})")
        if not (all(0 <= b < 1 for b in self.adam_betas) and 0 <= self.lr_decay_fraction <= 1
                and self.lr_warmup_steps >= 0):
            raise SAETrainingError("TrainConfig: adam_betas must be in [0, 1), lr_decay_fraction in [0, 1] and "
                                   "lr_warmup_steps >= 0")

    def resolved(self, d_in: int, n_rows: int) -> "TrainConfig":
        """This config with every ``None`` default filled in for data of width ``d_in`` and ``n_rows`` rows."""
        latents = self.latents or 8 * d_in
        n_tokens = self.n_tokens or n_rows
        return replace(self, latents=latents, n_tokens=n_tokens, aux_k=self.aux_k or max(1, d_in // 2),
                       lr=self.lr or 2e-4 / math.sqrt(latents / 2**14),
                       dead_tokens=self.dead_tokens or min(10_000_000, max(self.batch_size, n_tokens // 10)),
                       l1_coeff=self._l1_coeff(d_in),
                       adam_betas=tuple(self.adam_betas))


    def _l1_coeff(self, d_in: int) -> float:
        if self.l1_coeff is not None:
            return self.l1_coeff
        return 5 / math.sqrt(d_in) if self.architecture == "relu" else 0.0


class ActivationSource(Protocol):
    """Activation rows for training: ``batches`` yields every one of the ``n_rows`` rows ([rows, d_in]) once per
    call, shuffled in an order fixed by ``seed``, ``batch_rows`` at a time (the last batch may be smaller)."""
    d_in: int
    n_rows: int

    def batches(self, batch_rows: int, seed: int) -> Iterator[Rows]: ...


class ArraySource:
    """An in-memory [n, d] numpy array or torch tensor as an ``ActivationSource``."""

    def __init__(self, array: Rows) -> None:
        if array.ndim != 2:
            raise SAETrainingError(f"ArraySource: activation rows must be a 2-d array (got shape "
                                   f"{tuple(array.shape)})")
        self.array = array
        self.n_rows, self.d_in = int(array.shape[0]), int(array.shape[1])

    def batches(self, batch_rows: int, seed: int) -> Iterator[Rows]:
        order = np.arange(self.n_rows)
        np.random.default_rng(seed).shuffle(order)
        for start in range(0, self.n_rows, batch_rows):
            chunk = order[start:start + batch_rows]
            yield self.array[torch.from_numpy(chunk) if isinstance(self.array, torch.Tensor) else chunk]


@dataclass
class TrainResult:
    """The trained SAE (in eval mode), one history row per step (``HISTORY_COLUMNS``: the batch's loss, mse per
    element, FVU about the batch mean, aux loss, L1 term, mean L0, dead fraction, seconds since the start), the
    tokens trained in all and the training speed of this call."""
    sae: SparseAutoencoder
    history: pd.DataFrame
    n_tokens: int
    tokens_per_second: float


@dataclass
class _State:
    """Everything besides the weights and the optimizer that a checkpoint must keep to resume exactly."""
    step: int = 0
    tokens: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    variance: float = 1.0
    since_fired: Optional[torch.Tensor] = None
    history: list = field(default_factory=list)


def geometric_median(x: torch.Tensor, iterations: int = 100, tol: float = 1e-7) -> torch.Tensor:
    """The point minimising the summed Euclidean distances to the rows of ``x`` (Weiszfeld's algorithm, float64)."""
    x = x.to(torch.float64)
    median = x.mean(0)
    for _ in range(iterations):
        weights = 1 / (x - median).norm(dim=1).clamp_min(1e-12)
        updated = (weights[:, None] * x).sum(0) / weights.sum()
        moved = (updated - median).norm()
        median = updated
        if moved <= tol * (1 + median.norm()):
            break
    return median


def _as_rows(batch: Rows, d_in: int) -> torch.Tensor:
    rows = torch.as_tensor(batch).to(torch.float32)
    if rows.ndim != 2 or rows.shape[1] != d_in:
        raise SAETrainingError(f"activation source: a batch of shape {tuple(rows.shape)}, expected [rows, {d_in}]")
    return rows


def _pass_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of pass ``epoch`` over the data (independent streams per pass)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _init_from_data(sae: SparseAutoencoder, source: ActivationSource, config: TrainConfig) -> float:
    """Set b_dec from a shuffled sample of the data; return the sample's variance E‖x − μ‖²."""
    batches = source.batches(config.sample_rows, _pass_seed(config.seed, SAMPLE_PASS))
    sample = _as_rows(next(iter(batches)), source.d_in).to(torch.float64)
    close = getattr(batches, "close", None)
    if close is not None:
        close()
    centre = {"geometric_median": geometric_median, "mean": lambda x: x.mean(0),
              "zeros": lambda x: torch.zeros(x.shape[1], dtype=torch.float64)}[config.b_dec_init](sample)
    with torch.no_grad():
        sae.b_dec.copy_(centre.to(sae.b_dec.dtype))
    variance = float((sample - sample.mean(0)).pow(2).sum(1).mean())
    if not variance > 0:
        raise SAETrainingError("activation source: the rows have no variance (all equal); nothing to learn")
    return variance


def _aux_k_loss(sae: SparseAutoencoder, pre: torch.Tensor, error: torch.Tensor, dead: torch.Tensor,
                aux_k: int) -> torch.Tensor:
    """Gao et al.'s AuxK: the top ``aux_k`` dead latents reconstruct the detached error, as ‖e − ê‖² / ‖e − ē‖²."""
    n_dead = int(dead.sum())
    spread = (error - error.mean(0)).pow(2).sum()
    if n_dead == 0 or not spread > 0:
        return pre.new_zeros(())
    values, latents = pre.masked_fill(~dead, -torch.inf).topk(min(aux_k, n_dead), dim=-1)
    error_hat = (torch.relu(values)[..., None] * sae.W_dec[latents]).sum(1)
    return (error - error_hat).pow(2).sum() / spread


def _losses(sae: SparseAutoencoder, x: torch.Tensor, state: _State, config: TrainConfig) -> dict:
    """The batch's loss and its parts; updates the dead-latent counters."""
    pre = sae.pre_activations(x)
    z = sae.activate(pre)
    error = x - sae.decode(z)
    squared = error.pow(2).sum()
    active = z.detach() > 0
    state.since_fired = torch.where(active.any(0), 0, state.since_fired + len(x))
    dead = state.since_fired >= config.dead_tokens
    parts = {"recon": squared / (len(x) * state.variance), "aux_loss": pre.new_zeros(()), "l1": pre.new_zeros(())}
    if config.architecture in SPARSE_K and config.aux_coeff > 0:
        parts["aux_loss"] = _aux_k_loss(sae, pre, error.detach(), dead, config.aux_k)
    if config.architecture == "relu":
        parts["l1"] = (z * sae.W_dec.norm(dim=1)).sum(1).mean() / math.sqrt(state.variance)
    parts["loss"] = parts["recon"] + config.aux_coeff * parts["aux_loss"] + config.l1_coeff * parts["l1"]
    parts = {name: value if name == "loss" else value.detach() for name, value in parts.items()}
    parts.update(mse=squared.detach() / error.numel(), l0=float(active.sum()) / len(x),
                 fvu=squared.detach() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-30),
                 dead_fraction=float(dead.sum()) / config.latents)
    return parts


def planned_steps(config: TrainConfig, n_rows: int) -> int:
    """The number of steps of a resolved config on ``n_rows`` rows (batches of ``batch_size``, the last of each
    pass smaller, the last of all cut at ``n_tokens``)."""
    passes, rest = divmod(config.n_tokens, n_rows)
    return passes * math.ceil(n_rows / config.batch_size) + math.ceil(rest / config.batch_size)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The lr of step ``step`` (0-based): linear warm-up over ``lr_warmup_steps``, constant, then a linear decay
    to 0 over the last ``lr_decay_fraction`` of the steps."""
    warm = min(1.0, (step + 1) / config.lr_warmup_steps) if config.lr_warmup_steps else 1.0
    decay_steps = config.lr_decay_fraction * total_steps
    decay = min(1.0, (total_steps - step) / decay_steps) if decay_steps > 0 else 1.0
    return config.lr * warm * decay


def _step(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
          config: TrainConfig) -> None:
    """Backward, remove the gradient parallel to the (unit) decoder rows, clip, step, renormalise the decoder."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        grad, rows = sae.W_dec.grad, sae.W_dec.data
        grad -= (grad * rows).sum(1, keepdim=True) * rows
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), config.grad_clip)
        optimizer.step()
        sae.W_dec.data /= sae.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _batches(source: ActivationSource, state: _State, config: TrainConfig) -> Iterator[torch.Tensor]:
    """Training batches from the state's position on (a resumed pass skips the batches already trained), passes
    over the data reshuffled by seed, the last batch cut at ``n_tokens``; advances the state's position."""
    while state.tokens < config.n_tokens:
        seen = 0
        for index, batch in enumerate(source.batches(config.batch_size, _pass_seed(config.seed, state.epoch))):
            seen += len(batch)
            if index < state.batch_in_epoch:
                continue
            rows = _as_rows(batch, source.d_in)[:config.n_tokens - state.tokens]
            state.batch_in_epoch = index + 1
            yield rows
            if state.tokens >= config.n_tokens:
                return
        if seen == 0:
            raise SAETrainingError("activation source: a pass over the data yielded no rows")
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


def _checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:06d}.pt"


def _save_checkpoint(folder: Path, sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, state: _State,
                     config: TrainConfig) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"sae": sae.state_dict(), "sae_config": sae.config.to_dict(), "optimizer": optimizer.state_dict(),
               "train_config": _config_dict(config), "state": asdict(state)}
    temporary = folder / f".step-{state.step:06d}.pt.tmp"
    torch.save(payload, temporary)
    temporary.replace(_checkpoint_path(folder, state.step))


def _config_dict(config: TrainConfig) -> dict:
    values = asdict(config)
    values["adam_betas"] = list(config.adam_betas)
    return values


def latest_checkpoint(folder: Path) -> Optional[Path]:
    """The checkpoint with the highest step in ``folder`` (``step-NNNNNN.pt``), or None."""
    found = sorted(Path(folder).glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return found[-1] if found else None


def _load_checkpoint(folder: Path, sae: SparseAutoencoder, optimizer: torch.optim.Optimizer,
                     config: TrainConfig) -> _State:
    """Restore the latest checkpoint in ``folder`` into the SAE and optimizer; return the saved state."""
    path = latest_checkpoint(folder)
    if path is None:
        raise SAETrainingError(f"{folder}: no checkpoint (step-NNNNNN.pt) to resume from")
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise SAETrainingError(f"{path}: not a training checkpoint ({type(error).__name__})") from None
    if payload.get("train_config") != _config_dict(config):
        changed = sorted(k for k, v in _config_dict(config).items() if payload.get("train_config", {}).get(k) != v)
        raise SAETrainingError(f"{path}: saved with another training config (field {', '.join(changed)})")
    sae.load_state_dict(payload["sae"])
    optimizer.load_state_dict(payload["optimizer"])
    return _State(**payload["state"])


def _build_sae(source: ActivationSource, config: TrainConfig, extras: dict) -> SparseAutoencoder:
    unknown = sorted(set(extras) - set(SAE_FIELDS))
    if unknown:
        raise SAETrainingError(f"sae_config_extras: unknown field {', '.join(unknown)} (allowed: "
                               f"{', '.join(SAE_FIELDS)})")
    metadata = {**extras.get("metadata", {}), "training": _config_dict(config)}
    sae_config = SAEConfig(d_in=source.d_in, d_sae=config.latents, architecture=config.architecture,
                           k=config.k if config.architecture in SPARSE_K else None,
                           **{**extras, "metadata": metadata})
    return SparseAutoencoder.from_init(sae_config, seed=config.seed)


def _record(parts: dict, state: _State, started: float) -> dict:
    row = {"step": state.step, "tokens": state.tokens, "seconds": time.perf_counter() - started}
    row.update({name: float(parts[name].detach() if name == "loss" else parts[name])
                for name in HISTORY_COLUMNS if name in parts})
    return row


def initial_sae(source: ActivationSource, config: TrainConfig,
                sae_config_extras: Optional[dict] = None) -> tuple[SparseAutoencoder, float]:
    """The SAE before its first step (Gao et al.'s initialisation, b_dec from the data) and the variance σ² that
    normalises the reconstruction loss."""
    config = _resolved(source, config)
    sae = _build_sae(source, config, dict(sae_config_extras or {}))
    return sae, _init_from_data(sae, source, config)


def _resolved(source: ActivationSource, config: TrainConfig) -> TrainConfig:
    if source.n_rows < 1 or source.d_in < 1:
        raise SAETrainingError(f"activation source: no rows to train on ({source.n_rows} x {source.d_in})")
    return config.resolved(source.d_in, source.n_rows)


def train_sae(source: ActivationSource, config: TrainConfig = TrainConfig(),
              sae_config_extras: Optional[dict] = None, checkpoints: Optional[Path] = None,
              progress: bool = True, resume: bool = False) -> TrainResult:
    """Train an SAE on ``source`` (module docstring). ``sae_config_extras`` fills the SAE config's site, model,
    apply_b_dec_to_input and metadata; ``checkpoints`` receives ``step-NNNNNN.pt`` every ``checkpoint_every``
    steps; ``resume`` continues from the latest one there (same config required)."""
    config = _resolved(source, config)
    if resume:
        if checkpoints is None:
            raise SAETrainingError("resume: no checkpoints folder given")
        sae = _build_sae(source, config, dict(sae_config_extras or {}))
        optimizer = _optimizer(sae, config)
        state = _load_checkpoint(Path(checkpoints), sae, optimizer, config)
    else:
        sae, variance = initial_sae(source, config, sae_config_extras)
        optimizer = _optimizer(sae, config)
        state = _State(variance=variance, since_fired=torch.zeros(config.latents, dtype=torch.int64))
    sae.train()
    total_steps = planned_steps(config, source.n_rows)
    started, tokens_before = time.perf_counter(), state.tokens
    with tqdm(total=config.n_tokens, initial=state.tokens, unit="tok", unit_scale=True, desc="sae train",
              disable=not progress) as bar:
        for x in _batches(source, state, config):
            parts = _losses(sae, x, state, config)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, state.step, total_steps)
            _step(sae, optimizer, parts["loss"], config)
            state.step, state.tokens = state.step + 1, state.tokens + len(x)
            state.history.append(_record(parts, state, started))
            bar.update(len(x))
            bar.set_postfix(fvu=f"{state.history[-1]['fvu']:.3f}", l0=f"{state.history[-1]['l0']:.1f}",
                            dead=f"{state.history[-1]['dead_fraction']:.3f}", refresh=False)
            if checkpoints is not None and config.checkpoint_every and state.step % config.checkpoint_every == 0:
                _save_checkpoint(Path(checkpoints), sae, optimizer, state, config)
    seconds = time.perf_counter() - started
    return _finish(sae, source, state, config, (state.tokens - tokens_before) / max(seconds, 1e-9))


def _optimizer(sae: SparseAutoencoder, config: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(sae.parameters(), lr=config.lr, betas=config.adam_betas, eps=config.adam_eps)


def _batch_topk_threshold(sae: SparseAutoencoder, source: ActivationSource, config: TrainConfig) -> float:
    """Bussmann et al.'s threshold: the mean over batches of the smallest positive activation that the batch-level
    selection keeps (final weights; ``sample_rows`` rows in batches of ``batch_size``, weighted by their rows)."""
    total, weight = 0.0, 0
    sae.train()
    with torch.no_grad():
        for batch in source.batches(config.batch_size, _pass_seed(config.seed, SAMPLE_PASS)):
            z = sae.encode(_as_rows(batch, source.d_in))
            if (z > 0).any():
                total, weight = total + float(z[z > 0].min()) * len(z), weight + len(z)
            if weight >= config.sample_rows:
                break
    return total / weight if weight else 0.0


def _finish(sae: SparseAutoencoder, source: ActivationSource, state: _State, config: TrainConfig,
            speed: float) -> TrainResult:
    """Put the BatchTopK threshold and the trained token count into the SAE; switch it to inference."""
    if config.architecture == "batchtopk":
        with torch.no_grad():
            sae.threshold.fill_(_batch_topk_threshold(sae, source, config))
    sae.config = replace(sae.config, metadata={**sae.config.metadata, "n_tokens": state.tokens})
    sae.eval()
    history = pd.DataFrame(state.history, columns=HISTORY_COLUMNS)
    return TrainResult(sae=sae, history=history, n_tokens=state.tokens, tokens_per_second=speed)
