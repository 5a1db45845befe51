"""Demo model and data that ship inside installable packages, so examples, recipes and benchmarks run offline;
teacher-labelled, augmented transfer sets for distillation."""

from .augment import AugmentationConfig, augment_dataset, make_augmenter
from .demo import demo_model_path, load_fashion_mnist, load_rotten_tomatoes
from .teacher_pixels import TEACHER_PIXEL_VALUES, add_teacher_pixels
from .transfer import label_with_teacher

__all__ = [
    "TEACHER_PIXEL_VALUES",
    "AugmentationConfig",
    "add_teacher_pixels",
    "augment_dataset",
    "demo_model_path",
    "label_with_teacher",
    "load_fashion_mnist",
    "load_rotten_tomatoes",
    "make_augmenter",
]
