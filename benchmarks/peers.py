"""The tools a user would otherwise pick, run the way their documentation says, on our models and data.

Every peer is an optional dependency (``pip install -e ".[bench]"``); a missing one raises an ImportError
that says how to install it, and the suites turn that into a "not installed" row instead of failing.

- torchao ``quantize_(model, Int8WeightOnlyConfig())``
- optimum-quanto ``quantize(model, weights=qint8[, activations=qint8])`` + ``freeze``
- TextBrewer ``GeneralDistiller`` with the same losses, weights, layer map, optimizer and steps as our trainer
- Torch-Pruning ``MetaPruner`` (L2 magnitude, whole heads) to the same shape as our pruned students
"""

from __future__ import annotations

import importlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

INSTALL = 'pip install -e ".[bench]"'


def require(module: str, package: str):
    """Import an optional peer, or raise an ImportError that names the package and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        message = f"The peer '{package}' is not installed ({err}); install the benchmark extra: {INSTALL}"
        raise ImportError(message) from err


# ---- quantization peers -----------------------------------------------------------------------------------


def torchao_int8_weight_only(model: nn.Module) -> nn.Module:
    """torchao's int8 weight-only quantization of every Linear, in place."""
    quantization = require("torchao.quantization", "torchao")
    quantization.quantize_(model, quantization.Int8WeightOnlyConfig())
    for module in model.modules():  # torchao sets a bound-method repr per module, which cannot be pickled
        module.__dict__.pop("extra_repr", None)
    return model


def quanto_int8(model: nn.Module, calibration: Iterable[dict] | None = None) -> nn.Module:
    """optimum-quanto int8 weights; with ``calibration`` batches also int8 activations (W8A8), in place."""
    quanto = require("optimum.quanto", "optimum-quanto")
    quanto.quantize(model, weights=quanto.qint8, activations=quanto.qint8 if calibration is not None else None)
    if calibration is not None:
        with quanto.Calibration(), torch.inference_mode():
            for batch in calibration:
                model(**batch)
    quanto.freeze(model)
    return model


# ---- Torch-Pruning -----------------------------------------------------------------------------------------


_QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))  # BERT / ViT in transformers 5


def _attention_modules(model: nn.Module) -> list[tuple[nn.Module, tuple[nn.Linear, nn.Linear, nn.Linear]]]:
    found = []
    for module in model.modules():
        for names in _QKV_NAMES:
            if hasattr(module, "num_attention_heads") and all(hasattr(module, n) for n in names):
                found.append((module, tuple(getattr(module, n) for n in names)))
    return found


def _head_dim(module: nn.Module) -> int:
    return getattr(module, "attention_head_size", None) or module.head_dim


def torch_pruning_prune(model: nn.Module, example_inputs: dict, ratio: float) -> nn.Module:
    """Torch-Pruning's MetaPruner with L2-magnitude importance: remove ``ratio`` of the hidden channels, of the
    attention heads (whole heads) and of the FFN neurons of a BERT or ViT classifier, in place.

    As Torch-Pruning's transformers example does, the attention modules' head counts are updated by hand so
    the forward pass runs; ``model.config`` is left as Torch-Pruning leaves it (the original widths).
    """
    tp = require("torch_pruning", "torch-pruning")
    model.requires_grad_(True)  # Torch-Pruning traces the autograd graph; a frozen (teacher) copy prunes nothing
    attention = _attention_modules(model)
    num_heads = {lin: module.num_attention_heads for module, qkv in attention for lin in qkv}
    head = next(getattr(model, n) for n in ("classifier", "cls", "lm_head") if hasattr(model, n))
    embeddings = model.base_model.embeddings
    unwrapped = [(p, p.dim() - 1) for n in ("cls_token", "position_embeddings", "mask_token")
                 if isinstance(p := getattr(embeddings, n, None), nn.Parameter)]  # fmt: skip
    pruner = tp.pruner.MetaPruner(
        model,
        dict(example_inputs),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
        ignored_layers=[head],
        unwrapped_parameters=unwrapped or None,
        output_transform=lambda out: out.logits.sum(),
    )
    pruner.step()
    for module, (query, _, _) in attention:
        module.num_attention_heads = query.out_features // _head_dim(module)
        if hasattr(module, "all_head_size"):
            module.all_head_size = query.out_features
    return model


def structure_of(model: nn.Module) -> tuple[int, int, int]:
    """(hidden, heads, FFN) read from the weights, not the config (which Torch-Pruning leaves stale)."""
    module, (query, _, _) = _attention_modules(model)[0]
    ffn = next(m for n, m in model.named_modules() if n.endswith(("intermediate.dense", "mlp.fc1")))
    return query.in_features, module.num_attention_heads, ffn.out_features


# ---- TextBrewer --------------------------------------------------------------------------------------------


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The Trainer's grouping: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if "bias" in name or "layernorm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _adaptor(batch, outputs) -> dict:
    """TextBrewer adaptor for transformers outputs (BERT and ViT)."""
    hidden = outputs.hidden_states
    mask = batch.get("attention_mask")
    if mask is None:  # images: every patch counts (TextBrewer's unmasked attention_ce would drop log-probs)
        mask = torch.ones(hidden[0].shape[:2], dtype=torch.long, device=hidden[0].device)
    result = {"logits": outputs.logits, "hidden": hidden, "inputs_mask": mask}
    if outputs.attentions is not None:
        result["attention"] = [a.clamp_min(1e-12).log() for a in outputs.attentions]
    return result


def textbrewer_distiller(
    teacher: nn.Module,
    student: nn.Module,
    *,
    layer_pairs: list[tuple[int, int]],
    temperature: float = 2.0,
    kd_weight: float = 1.0,
    hidden_weight: float = 1.0,
    attention_weight: float = 1.0,
    output_dir: str,
    steps: int,
):
    """A TextBrewer ``GeneralDistiller`` whose objective is our ``DistillationTrainer``'s.

    Same objective as ``DistillationConfig(kd_weight, hidden_weight, attention_weight, temperature)``:
    TextBrewer's ``kd_loss_type="ce"`` differs from our KL by the teacher's entropy (a constant) and is not
    multiplied by T^2, so its weight is ``kd_weight * T^2``; hidden-state MSE and attention cross-entropy per
    layer pair get ``weight / len(layer_pairs)`` (we average over pairs). Attention maps are handed to
    TextBrewer as log-probabilities, whose softmax is the probabilities transformers returns. Models must
    be called with ``forward_kwargs(attention_weight)``.
    """
    textbrewer = require("textbrewer", "textbrewer")
    teacher_width, student_width = teacher.config.hidden_size, student.config.hidden_size
    proj = None if teacher_width == student_width else ["linear", student_width, teacher_width, {}]
    n = len(layer_pairs)
    matches = []
    for s, t in layer_pairs:
        if hidden_weight:
            matches.append({"layer_T": t + 1, "layer_S": s + 1, "feature": "hidden", "loss": "hidden_mse",
                            "weight": hidden_weight / n, "proj": proj})  # fmt: skip
        if attention_weight:
            matches.append({"layer_T": t, "layer_S": s, "feature": "attention", "loss": "attention_ce",
                            "weight": attention_weight / n})  # fmt: skip
    train_config = textbrewer.TrainingConfig(device="cpu", output_dir=output_dir, log_dir=None, ckpt_steps=steps)
    distill_config = textbrewer.DistillationConfig(
        temperature=temperature,
        kd_loss_type="ce",
        kd_loss_weight=kd_weight * temperature**2,
        hard_label_weight=0.0,
        intermediate_matches=matches,
    )
    return textbrewer.GeneralDistiller(train_config, distill_config, teacher, student, _adaptor, _adaptor)


def forward_kwargs(attention_weight: float) -> dict:
    return {"output_hidden_states": True, "output_attentions": bool(attention_weight)}


def textbrewer_distill(
    teacher: nn.Module,
    student: nn.Module,
    dataset,
    collate_fn: Callable | None,
    *,
    layer_pairs: list[tuple[int, int]],
    temperature: float = 2.0,
    kd_weight: float = 1.0,
    hidden_weight: float = 1.0,
    attention_weight: float = 1.0,
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    warmup_steps: int = 20,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    seed: int = 0,
) -> float:
    """Distil ``student`` in place with TextBrewer (objective: see ``textbrewer_distiller``) and the training
    setup of our benchmark runs (AdamW with the Trainer's decay groups, linear schedule with warmup, clipping,
    batch size, seed); returns the wall time in seconds.
    """
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed),
    )
    steps = max_steps if max_steps > 0 else math.ceil(epochs * len(loader))
    out = tempfile.mkdtemp(prefix="textbrewer-")  # TextBrewer saves the student's state_dict at its checkpoints
    distiller = textbrewer_distiller(
        teacher,
        student,
        layer_pairs=layer_pairs,
        temperature=temperature,
        kd_weight=kd_weight,
        hidden_weight=hidden_weight,
        attention_weight=attention_weight,
        output_dir=out,
        steps=steps,
    )
    attn = {m: m.config._attn_implementation for m in (teacher, student)}
    if attention_weight:
        for m in attn:
            m.set_attn_implementation("eager")  # transformers' sdpa returns no attention maps
    optimizer = torch.optim.AdamW(_decay_groups(student, weight_decay), lr=learning_rate)
    start = time.perf_counter()
    try:
        with distiller:
            distiller.train(
                optimizer,
                loader,
                num_steps=steps,
                scheduler_class=get_linear_schedule_with_warmup,
                scheduler_args={"num_warmup_steps": warmup_steps, "num_training_steps": steps},
                max_grad_norm=max_grad_norm,
                batch_postprocessor=dict,  # TextBrewer calls model(**batch) only for plain dicts
                **forward_kwargs(attention_weight),
            )
    finally:
        for m, implementation in attn.items():
            m.set_attn_implementation(implementation)
        shutil.rmtree(out, ignore_errors=True)
    return time.perf_counter() - start
