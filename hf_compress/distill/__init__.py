"""Knowledge distillation: prediction, hidden-state, attention and embedding KD on the stock Trainer."""

from .config import DistillationConfig
from .deit_student import make_deit_student
from .student import make_student
from .trainer import DistillationTrainer

__all__ = ["DistillationConfig", "DistillationTrainer", "make_deit_student", "make_student"]
