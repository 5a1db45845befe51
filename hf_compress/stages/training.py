"""What every training stage shares: the Trainer's data arguments, and training that resumes from the last
complete checkpoint of an interrupted earlier run of the same stage."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from ..validation import inside

logger = logging.getLogger(__name__)


def trainer_data(ctx: Any) -> dict[str, Any]:
    """The Trainer keyword arguments for the recipe's data: train / eval splits, collator and processor."""
    return dict(train_dataset=ctx.data["train"], eval_dataset=ctx.data.get("validation"),
                data_collator=ctx.collator, processing_class=ctx.processor)  # fmt: skip


def last_complete_checkpoint(work_dir: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (trainer_state.json is written last); a checkpoint
    cut short by a crash is removed."""
    while work_dir.is_dir():
        last = get_last_checkpoint(str(work_dir))
        if last is None or (Path(last) / "trainer_state.json").is_file():
            return last
        logger.warning("removing the incomplete checkpoint %s", last)
        shutil.rmtree(inside(work_dir, Path(last)))
    return None


def train_resuming(trainer: Trainer, work_dir: Path) -> None:
    """Train, resuming from the last checkpoint of an interrupted earlier run of this stage."""
    last = last_complete_checkpoint(work_dir)
    if last:
        logger.info("resuming %s from %s", work_dir.name, last)
    trainer.train(resume_from_checkpoint=last)


# Training stages checkpoint every 10% of their steps (keeping the last), so a killed stage resumes exactly.
CHECKPOINTS = {"report_to": "none", "save_strategy": "steps", "save_steps": 0.1, "save_total_limit": 1}
