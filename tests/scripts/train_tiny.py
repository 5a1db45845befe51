"""Train a tiny student with the distillation or HomoDistil trainer; used by the multi-process and kill/resume
tests. Writes the final student weights (and pruning masks) under --out; every rank writes its own masks."""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import bert_config, text_dataset  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import BertForSequenceClassification, TrainerCallback  # noqa: E402

from hf_compress import DistillationConfig, DistillationTrainer, HomoDistilConfig, HomoDistilTrainer  # noqa: E402


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save: a real crash


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["distill", "homodistil"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    a = parser.parse_args()

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    common = dict(
        output_dir=a.out,
        max_steps=a.steps,
        per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=a.accumulation,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        optim="sgd",
        report_to=[],
        seed=0,
        use_cpu=True,
        dataloader_pin_memory=False,
        train_sampling_strategy="sequential",
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        hidden_weight=1.0,
        attention_weight=1.0,
        hard_label_weight=0.5,
        attention_head_mode="mean",
    )
    data = text_dataset(64, padded=False)
    callbacks = [KillAt(a.kill_at)] if a.kill_at else None
    if a.mode == "distill":
        student = BertForSequenceClassification(
            bert_config(hidden_size=16, num_attention_heads=2, num_hidden_layers=2)
        )
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=DistillationConfig(**common),
            train_dataset=data,
            callbacks=callbacks,
        )
    else:
        args = HomoDistilConfig(
            **common,
            target_hidden_size=16,
            target_num_heads=2,
            target_intermediate_size=32,
            prune_end_step=6,
            prune_every=1,
        )
        trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data, callbacks=callbacks)
    assert not isinstance(trainer.teacher, torch.nn.parallel.DistributedDataParallel), "teacher was DDP-wrapped"
    resume = a.resume and any(p.name.startswith("checkpoint-") for p in Path(a.out).glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    rank = trainer.args.process_index
    info = {
        "world_size": trainer.args.world_size,
        "projections_ddp": isinstance(trainer.projections, torch.nn.parallel.DistributedDataParallel),
    }
    if a.mode == "homodistil":
        info["masks"] = {k: v.tolist() for k, v in trainer.pruner.masks.state_dict().items()}
    Path(a.out, f"rank{rank}.json").write_text(json.dumps(info))
    if trainer.args.should_save:
        state = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(Path(a.out) / "final.safetensors"))


if __name__ == "__main__":
    main()
