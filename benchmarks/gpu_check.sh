#!/usr/bin/env bash
# Prepared GPU check (<= 5 minutes): distillation, HomoDistil and quantization smoke runs on CUDA, plus a latency
# table (fp32 / bf16 / int8 weight-only, ratio to fp32), and 2:4 sparsity (a SparsifyTrainer run; dense vs
# semi-structured sparse fp16 matmul). For a session lent a GPU through the device tool:
#   run: bash benchmarks/gpu_check.sh   (needs torch with CUDA, transformers, accelerate, datasets importable;
#        PYTHONPATH=. is enough for hf_compress itself; OUT=<dir> receives gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd):$(pwd)/tests" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total --format=csv || true
timeout 300 python - <<'PY'
import json, os, statistics, tempfile, time
import torch
from conftest import bert_config, text_dataset
from transformers import BertForSequenceClassification
from hf_compress import (DistillationConfig, DistillationTrainer, HomoDistilConfig, HomoDistilTrainer,
                         QuantizationConfig, make_student, quantize)

assert torch.cuda.is_available(), "no CUDA device visible"
report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
torch.manual_seed(0)
teacher = BertForSequenceClassification(bert_config(hidden_size=256, num_attention_heads=4, intermediate_size=1024,
                                                    num_hidden_layers=4, max_position_embeddings=128)).cuda()
data = text_dataset(256, padded=False)
common = dict(max_steps=20, per_device_train_batch_size=32, report_to=[], save_strategy="no", bf16=True)

start = time.time()
student = make_student(teacher, [1, 3])
trainer = DistillationTrainer(model=student, teacher_model=teacher, train_dataset=data,
                              args=DistillationConfig(output_dir=tempfile.mkdtemp(), hidden_weight=1.0,
                                                      attention_weight=1.0, **common))
trainer.train()
report["distill"] = {"seconds": time.time() - start, "device": str(next(student.parameters()).device),
                     "final_loss": trainer.state.log_history[-1].get("train_loss")}

start = time.time()
trainer = HomoDistilTrainer(teacher_model=teacher, train_dataset=data, args=HomoDistilConfig(
    output_dir=tempfile.mkdtemp(), hidden_weight=1.0, target_hidden_size=128, target_num_heads=2,
    target_intermediate_size=512, prune_end_step=12, prune_every=2, **common))
trainer.train()
pruned = trainer.sliced_model()
report["homodistil"] = {"seconds": time.time() - start, "shape": [pruned.config.hidden_size,
                        pruned.config.num_attention_heads, pruned.config.intermediate_size]}

ids = torch.randint(1, 64, (8, 128), device="cuda")
models = {"fp32": teacher.eval()}
models["bf16"] = BertForSequenceClassification(teacher.config).cuda().to(torch.bfloat16).eval()
models["bf16"].load_state_dict(teacher.state_dict())
import copy
models["int8_weight_only"] = quantize(copy.deepcopy(teacher).eval(), QuantizationConfig(method="int8_weight_only"))
models["pruned"] = pruned.cuda().eval()
times = {k: [] for k in models}
with torch.inference_mode():
    for m in models.values():
        for _ in range(3):
            m(input_ids=ids)
    for _ in range(20):
        for name, m in models.items():
            torch.cuda.synchronize(); t = time.perf_counter(); m(input_ids=ids); torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    ref = statistics.median(times["fp32"])
    report["latency_8x128_ratio_to_fp32"] = {k: statistics.median(v) / ref for k, v in times.items()}
    q = models["int8_weight_only"](input_ids=ids).logits.float()
    report["int8_weight_only_max_abs_diff"] = float((q - teacher(input_ids=ids).logits).abs().max())

# 2:4 semi-structured sparsity: a SparsifyTrainer smoke run, then the fp16 matmul of a BERT-base FFN shape
# (tokens x 768 -> 3072) dense vs torch's semi-structured sparse kernels (sparse tensor cores, Ampere and newer).
from hf_compress import SparsifyConfig, SparsifyTrainer
from hf_compress.sparsity import measured_sparsity
start = time.time()
sparse_student = copy.deepcopy(teacher).float().train()
trainer = SparsifyTrainer(model=sparse_student, teacher_model=teacher, train_dataset=data, args=SparsifyConfig(
    output_dir=tempfile.mkdtemp(), sparsity=0.5, sparsity_pattern="2:4", **common))
trainer.train()
report["sparsify_2to4"] = {"seconds": time.time() - start, "sparsity": measured_sparsity(trainer.model)}
try:
    from torch.sparse import to_sparse_semi_structured
    w = torch.nn.Linear(768, 3072).half().cuda().weight.detach()
    groups = w.abs().view(w.shape[0], -1, 4)
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True).view_as(w)
    dense_w = (w * mask).contiguous()
    sparse_w = to_sparse_semi_structured(dense_w)
    x = torch.randn(8 * 128, 768, dtype=torch.half, device="cuda")
    def timed(fn, reps=50):
        for _ in range(5):
            fn()
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / reps
    with torch.inference_mode():
        dense_s = timed(lambda: torch.nn.functional.linear(x, dense_w))
        sparse_s = timed(lambda: torch.nn.functional.linear(x, sparse_w))
        diff = float((torch.nn.functional.linear(x, dense_w) - torch.nn.functional.linear(x, sparse_w)).abs().max())
    report["semi_structured_2to4_fp16_1024x768x3072"] = {"dense_ms": 1e3 * dense_s, "sparse_ms": 1e3 * sparse_s,
                                                       "speedup": dense_s / sparse_s, "max_abs_diff": diff}
except Exception as err:  # no kernel for this GPU / build: recorded, not fatal
    report["semi_structured_2to4_fp16_1024x768x3072"] = {"error": f"{type(err).__name__}: {err}"}
print(json.dumps(report, indent=2))
if os.environ.get("OUT"):
    open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w").write(json.dumps(report, indent=2))
PY
