"""A run_glue.py-style text-classification script that distils instead of fine-tuning.

The only changes from the stock transformers example are marked `# hf_compress`: the arguments class is
`DistillationConfig` (TrainingArguments + the distillation losses), the trainer is `DistillationTrainer`, and
there is a `--teacher_model_name_or_path` argument.

    python examples/run_glue_distill.py --model_name_or_path my-student --teacher_model_name_or_path my-teacher \
        --train_file train.csv --validation_file dev.csv --output_dir out --do_train --do_eval \
        --hidden_weight 1.0 --attention_weight 1.0
    # or a GLUE task with Hub access: --task_name sst2
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, HfArgumentParser

from hf_compress import DistillationConfig, DistillationTrainer  # hf_compress
from hf_compress.metrics import load_metric

TASK_TO_KEYS = {
    "cola": ("sentence", None),
    "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None),
    "stsb": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "The student: a local path or Hub id."})
    teacher_model_name_or_path: str = field(metadata={"help": "The fine-tuned teacher."})  # hf_compress


@dataclass
class DataTrainingArguments:
    task_name: str | None = field(default=None, metadata={"help": f"A GLUE task: {sorted(TASK_TO_KEYS)}"})
    train_file: str | None = field(default=None, metadata={"help": "csv / json with the text and label columns"})
    validation_file: str | None = field(default=None)
    max_seq_length: int = field(default=128)
    text_column: str = field(default="sentence")
    text_pair_column: str | None = field(default=None)


def main(argv=None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, DistillationConfig))  # hf_compress
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)

    if data_args.task_name:
        raw = load_dataset("glue", data_args.task_name)
        text_key, pair_key = TASK_TO_KEYS[data_args.task_name]
    else:
        files = {"train": data_args.train_file, "validation": data_args.validation_file}
        files = {k: v for k, v in files.items() if v}
        raw = load_dataset(data_args.train_file.rsplit(".", 1)[-1].replace("jsonl", "json"), data_files=files)
        text_key, pair_key = data_args.text_column, data_args.text_pair_column
    is_regression = data_args.task_name == "stsb"
    num_labels = 1 if is_regression else len(set(raw["train"]["label"]))

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path, num_labels=num_labels)

    def preprocess(batch):
        pair = batch[pair_key] if pair_key else None
        return tokenizer(batch[text_key], pair, truncation=True, max_length=data_args.max_seq_length)

    data = raw.map(preprocess, batched=True)
    metric = load_metric("mse" if is_regression else "accuracy")

    def compute_metrics(pred):
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        preds = np.squeeze(logits) if is_regression else np.argmax(logits, axis=1)
        return metric.compute(predictions=preds, references=pred.label_ids)

    trainer = DistillationTrainer(  # hf_compress
        model=model,
        teacher_model=model_args.teacher_model_name_or_path,  # hf_compress
        args=training_args,
        train_dataset=data["train"] if training_args.do_train else None,
        eval_dataset=data["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    metrics = {}
    if training_args.do_train:
        metrics.update(trainer.train().metrics)
        trainer.save_model()
    if training_args.do_eval:
        metrics.update(trainer.evaluate())
    trainer.log_metrics("all", metrics)
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
