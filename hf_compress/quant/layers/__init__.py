"""Quantized layer kinds, one module each; every kind module registers its `kinds.QuantizedKind` at import (the
imports are in ``hf_compress/quant/__init__.py``). `int8` holds what the int8 Linear kinds share."""
