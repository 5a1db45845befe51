"""Peak inference memory of a model, measured in a fresh process.

The model is pickled (``torch.save``) and loaded by a child Python process that has already imported every
module the model's classes come from; the child records its resident set size (RSS) before the load, resets
the kernel's peak-RSS counter, runs one forward pass under ``inference_mode`` and reads the peak back. The
reported number is ``peak RSS - RSS before the load``: the weights as they sit in memory (including any packed
int8 kernel copies built on first use) plus the transient activations of that forward. Linux only (it reads
``/proc/self/status``); elsewhere the measurement is NaN.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

_CHILD = r"""
import gc, importlib, json, sys
import torch

def rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field + " not in /proc/self/status")

spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
for name in spec["modules"]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
gc.collect()
before = rss_kb("VmRSS")
model = torch.load(spec["model"], weights_only=False)
inputs = torch.load(spec["inputs"])
gc.collect()
loaded = rss_kb("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
except OSError:
    pass
with torch.inference_mode():
    model(**inputs)
peak = max(rss_kb("VmHWM"), loaded)
print(json.dumps({"peak_mb": (peak - before) / 1024, "resident_mb": (loaded - before) / 1024}))
"""


def _modules_of(model: torch.nn.Module) -> list[str]:
    names = {type(m).__module__ for m in model.modules()}
    names |= {type(t).__module__ for t in list(model.parameters()) + list(model.buffers())}
    return sorted(n for n in names if n and n != "builtins")


@contextlib.contextmanager
def _output_capturing_hooks_removed(model: torch.nn.Module):
    """Take off the forward hooks transformers 5 installs on first use to collect hidden states and attentions
    (local functions: a model that has run once cannot be pickled), and put them back afterwards. The pickled
    copy has none and its flag cleared, so transformers reinstalls them there on demand."""
    removed, flags = [], []
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if "output_capturing_hook" in getattr(hook, "__qualname__", ""):
                removed.append((module, key, hook))
                del module._forward_hooks[key]
        if "_output_capturing_hooks_installed" in module.__dict__:
            flags.append((module, module.__dict__.pop("_output_capturing_hooks_installed")))
    try:
        yield model
    finally:
        for module, key, hook in removed:
            module._forward_hooks[key] = hook
        for module, value in flags:
            module._output_capturing_hooks_installed = value


def peak_inference_mb(model: torch.nn.Module, inputs: dict, threads: int = 2, timeout: float = 600) -> dict:
    """``{"peak_mb": ..., "resident_mb": ...}`` of ``model(**inputs)`` in a fresh process (NaN if impossible).

    ``peak_mb``: the peak RSS during the forward minus the RSS before the model was loaded;
    ``resident_mb``: the model alone, resident after loading. A model that cannot be pickled gets NaN and an
    ``error`` key saying why.
    """
    nan = {"peak_mb": float("nan"), "resident_mb": float("nan")}
    if not Path("/proc/self/status").is_file():
        return {**nan, "error": "needs Linux /proc"}
    with tempfile.TemporaryDirectory() as tmp:
        model_file, inputs_file = Path(tmp) / "model.pt", Path(tmp) / "inputs.pt"
        try:
            with _output_capturing_hooks_removed(model):
                torch.save(model, model_file)
        except Exception as err:
            return {**nan, "error": f"cannot be pickled ({type(err).__name__}: {err})"}
        torch.save(dict(inputs), inputs_file)
        spec = {"model": str(model_file), "inputs": str(inputs_file), "threads": threads}
        spec["modules"] = _modules_of(model)
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=timeout
        )
    if proc.returncode != 0:
        return {**nan, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])
