"""Weight sparsity: unstructured and 2:4 magnitude masks, and `SparsifyTrainer` (gradual magnitude sparsification
with distillation). The model keeps its shape: smaller or faster only with a sparse runtime or sparse GPU kernels."""

from .config import SparsifyConfig, SparsityPattern
from .masks import WeightMaskCallback, apply_weight_masks, magnitude_masks, measured_sparsity
from .trainer import GradualSparsity, SparsifyTrainer, sparsity_at

__all__ = ["GradualSparsity", "SparsifyConfig", "SparsifyTrainer", "SparsityPattern", "WeightMaskCallback",
           "apply_weight_masks", "magnitude_masks", "measured_sparsity", "sparsity_at"]  # fmt: skip
