"""Trainer checkpoints without a pickle: the training arguments are saved as JSON, not ``training_args.bin``."""

from __future__ import annotations

import os


class JsonTrainingArgs:
    """Mixin for a `transformers.Trainer` subclass (put it first in the bases): after the Trainer saves, the
    pickled ``training_args.bin`` is replaced by ``training_args.json`` (``TrainingArguments.to_json_string``)."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        pickle_path = os.path.join(output_dir, "training_args.bin")
        if self.args.should_save and os.path.isfile(pickle_path):
            os.remove(pickle_path)
            with open(os.path.join(output_dir, "training_args.json"), "w") as handle:
                handle.write(self.args.to_json_string())
