"""The version of hf_compress (its own module: subpackages read it without importing the package itself)."""

__version__ = "0.1.0"
