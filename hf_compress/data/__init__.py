"""Demo model and data that ship inside installable packages, so examples, recipes and benchmarks run offline."""

from .demo import demo_model_path, load_fashion_mnist, load_rotten_tomatoes

__all__ = ["demo_model_path", "load_fashion_mnist", "load_rotten_tomatoes"]
