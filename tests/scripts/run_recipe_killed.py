"""`hf-compress run RECIPE --output-dir OUT`, killed with SIGKILL when the training stage reaches --kill-at
(no cleanup, no final save: a real crash). Used by the kill -9 tests of every training stage kind."""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from train_tiny import KillAt  # noqa: E402  (same folder: the script's own directory is on sys.path)

import hf_compress.stages.training as training  # noqa: E402
from hf_compress.cli import main  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--kill-at", type=int, required=True)
    a = parser.parse_args()
    torch.set_num_threads(1)
    real_train = training.train_resuming

    def train_then_die(trainer, work_dir):
        trainer.add_callback(KillAt(a.kill_at))
        return real_train(trainer, work_dir)

    training.train_resuming = train_then_die
    sys.exit(main(["run", a.recipe, "--output-dir", a.output_dir]))
