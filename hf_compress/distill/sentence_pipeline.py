"""What a distillation trainer does for a sentence-transformers teacher: its student is saved with the teacher's
pipeline (`models.sentence.save_like_teacher`), and the sentence-embedding KD pools as the teacher's pipeline does."""

from __future__ import annotations

from ..models.sentence import save_like_teacher, teacher_pooling_mode


class SentencePipeline:
    """Mixin for `DistillationTrainer` (before the Trainer in the bases); uses ``self.teacher`` and ``self.args``."""

    # HomoDistil's checkpoints hold the full-size masked student: no pipeline there (its sliced saves write one)
    sentence_modules_on_save = True

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The Trainer's save, plus the teacher's sentence-transformers modules beside a bare-encoder student of a
        sentence-transformers teacher (`models.sentence`), so it loads in ``SentenceTransformer(dir)`` as one."""
        super()._save(output_dir, state_dict)
        if self.args.should_save and self.teacher is not None and self.sentence_modules_on_save:
            unwrap = self.accelerator.unwrap_model
            save_like_teacher(unwrap(self.model), unwrap(self.teacher), output_dir or self.args.output_dir)

    def _pooling_mode(self) -> str:
        """``pooling``, or for 'auto' the teacher's sentence-transformers Pooling (cls or mean; mean without one)."""
        if self.args.pooling != "auto":
            return self.args.pooling
        return teacher_pooling_mode(self.accelerator.unwrap_model(self.teacher) if self.teacher is not None else None)
