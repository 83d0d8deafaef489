"""Layer-wise analyses of activations stored per word, region or token: linear probes with control tasks,
encoding models of human measures, and representational similarity between conditions. Inputs are in memory:
``features`` (site name such as ``resid.3`` -> [n, d] array) and ``meta`` (n rows: set, item, condition, pool,
position, text, labels), as ``load_activations`` returns them from a run's ``activations/`` folder;
``ActivationReader`` reads that folder memory-mapped, by rows or in (shuffled) batches. The logit lens (``lens``)
turns scores read out at intermediate layers into tables.

Circuit analysis between the conditions of a set's items: ``pairs`` (the design), ``pair_sequences`` (sequences
and region alignment), ``circuit_metric`` (M in bits), ``patching`` (exact activation patching), ``attribution``
(AtP), ``mediation`` (Finlayson et al. 2021), ``ablation`` (with a random control; faithfulness) and
``causal_probes`` (interchange interventions along probe directions).

Sparse autoencoders: ``sae`` (the model), ``sae_harvest`` (token activations), ``sae_train``, ``sae_files``
(SAELens / sparsify layouts), ``sae_metrics`` (reconstruction), ``sae_splice`` (CE / KL recovered),
``sae_effects`` (effect preservation, feature ablation) and ``sae_features`` (contrast-carrying latents)."""
from .activations import (ActivationReader, ActivationWriter, activation_sites, load_activations, pool_tokens,
                          sorted_sites)
from .encoding import ALPHAS, ENCODING_COLUMNS, encode_layers, ridge_gcv, split_half_ceiling
from .probes import (PROBE_COLUMNS, check_features, control_labels, group_folds, group_permutation,
                     labels_from_conditions, probe_layers, site_layer, site_matrix)
from .lens import emergence, lens_accuracy, lens_tables
from .similarity import RSA_COLUMNS, condition_rdms, factor_rdm, layer_rsa
from .ablation import AblationConfig, ablate, faithfulness
from .attribution import AttributionConfig, attribute_set
from .causal_probes import CausalProbeConfig, causal_probes
from .mediation import MediationConfig, mediate
from .pairs import Pair, PairSpec
from .patching import PatchConfig, patch_set
from .sae import SAEConfig, SparseAutoencoder
from .sae_effects import SAEEffectConfig, ablate_latents, preserve_effects
from .sae_features import ContrastConfig, contrast_latents, sparse_probes, stimulus_top_contexts, text_top_contexts
from .sae_files import hook_to_site, load_sae, save_sae, site_to_hook, site_to_sparsify, sparsify_to_site
from .sae_harvest import HarvestConfig, ReaderSource, harvest
from .sae_metrics import ReconstructionStats, evaluate_reconstruction
from .sae_splice import evaluate_sae, splice
from .sae_train import TrainConfig, train_sae

__all__ = ["SAEConfig", "SparseAutoencoder", "SAEEffectConfig", "ablate_latents", "preserve_effects",
           "ContrastConfig", "contrast_latents", "sparse_probes", "stimulus_top_contexts", "text_top_contexts",
           "hook_to_site", "load_sae", "save_sae", "site_to_hook", "site_to_sparsify", "sparsify_to_site",
           "HarvestConfig", "ReaderSource", "harvest", "ReconstructionStats", "evaluate_reconstruction",
           "evaluate_sae", "splice", "TrainConfig", "train_sae", "AblationConfig", "AttributionConfig", "CausalProbeConfig", "MediationConfig", "Pair", "PairSpec",
           "PatchConfig", "ablate", "attribute_set", "causal_probes", "faithfulness", "mediate", "patch_set",
           "ActivationReader", "ActivationWriter", "activation_sites", "emergence", "lens_accuracy", "lens_tables",
           "load_activations", "pool_tokens", "ALPHAS", "ENCODING_COLUMNS", "PROBE_COLUMNS", "RSA_COLUMNS",
           "check_features", "condition_rdms", "control_labels", "encode_layers", "factor_rdm", "group_folds",
           "group_permutation", "labels_from_conditions", "layer_rsa", "probe_layers", "ridge_gcv", "site_layer",
           "site_matrix", "sorted_sites", "split_half_ceiling"]
