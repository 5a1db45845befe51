"""What a run keeps on disk, and the rules that keep it safe: fingerprints of what a stage depends on, the
finished-stage and work markers, atomic stage outputs, and the check that a run replaces only what it wrote and
never reads what it writes."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from .recipes import Recipe
from .validation import RecipeError, inside, looks_local

logger = logging.getLogger(__name__)
DONE_NAME = "hf_compress_stage.json"
WORK_NAME = "hf_compress_work.json"  # in .work-NN-stage: the fingerprint of the run its checkpoints belong to


def file_stamps(path: str | None) -> list:
    """(name, size, mtime) of a local file or of every file in a local folder: a changed teacher or data file
    changes the fingerprint without hashing gigabytes."""
    if not path:
        return []
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return [(str(p.relative_to(root)) if p != root else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def stage_fingerprint(recipe: Recipe, index: int) -> str:
    """Changes when anything this stage depends on changes: the teacher and data (recipe values and local
    files), the seed, this stage and every stage before it, and the hf_compress version."""
    from . import __version__

    resolved = recipe.resolved()
    files = {"teacher": file_stamps(recipe.teacher.source if recipe.teacher.source not in ("config", "demo-minilm")
                                     else None),
             "data": [file_stamps(p) for p in (recipe.data.files or {}).values()]}  # fmt: skip
    payload = {"teacher": resolved["teacher"], "data": resolved["data"], "seed": resolved["seed"],
               "stages": resolved["stages"][: index + 1], "files": files, "version": __version__}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_work_dir(output_dir: Path, work: Path, fingerprint: str, force: bool) -> None:
    """Keep ``work`` (checkpoints of an interrupted run) only when it belongs to this exact stage: same
    fingerprint and no ``--force``; otherwise discard it and start fresh."""
    work = inside(output_dir, work)
    marker = work / WORK_NAME
    if work.exists():
        try:
            same = json.loads(marker.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError, AttributeError):
            same = False
        if force or not same:
            logger.info("discarding %s (%s)", work.name, "--force" if force else "the stage changed")
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint}))


def read_done(folder: Path) -> dict | None:
    """The finished-stage marker, or None when the stage has not finished; a corrupt marker is an error."""
    done = folder / DONE_NAME
    if not done.is_file():
        return None
    try:
        marker = json.loads(done.read_text())
        if not isinstance(marker, dict) or "measurements" not in marker:
            raise ValueError("no measurements")
        return marker
    except (ValueError, OSError) as err:
        raise RecipeError(
            f"{done} is corrupt ({err}); re-run with --force to redo the stage (or delete {folder.name})."
        ) from err


def _stage_folders(recipe: Recipe, output_dir: Path) -> list[tuple[Path, Path]]:
    """(output folder, work folder) of every stage that writes one."""
    return [(output_dir / f"{i:02d}-{s.name}", output_dir / f".work-{i:02d}-{s.name}")
            for i, s in enumerate(recipe.stages) if s.spec.run is not None]  # fmt: skip


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_outputs(recipe: Recipe, output_dir: Path) -> None:
    """Before any work: the run replaces only what hf-compress wrote, and never reads what it writes.

    - a stage folder without the stage marker (`DONE_NAME`) and a ``.work`` folder without the work marker hold
      someone else's files: refused (``--force`` included), never moved aside or deleted;
    - ``summary.md`` / ``summary.json`` are only replaced in a folder that a run wrote (``recipe.resolved.yaml``);
    - the output folder must not be, or lie inside, the teacher folder; no input (teacher, data files) may lie in
      a folder or file the run replaces."""
    ours = (output_dir / "recipe.resolved.yaml").is_file()
    for name in ("summary.md", "summary.json"):
        if (output_dir / name).exists() and not ours:
            raise RecipeError(
                f"{output_dir / name} exists but {output_dir} was not written by hf-compress (no "
                "recipe.resolved.yaml), and a run would replace it. Choose an empty or new --output-dir, or move "
                "the file away."
            )
    replaced = [output_dir / n for n in ("summary.md", "summary.json", "recipe.resolved.yaml")]
    for folder, work in _stage_folders(recipe, output_dir):
        for path, marker in ((folder, DONE_NAME), (work, WORK_NAME)):
            inside(output_dir, path)  # a planted link pointing outside is refused first
            if path.exists() and not _is_empty_dir(path) and not (path / marker).is_file():
                raise RecipeError(
                    f"{path} exists and was not written by hf-compress (it has no {marker}); a run would replace "
                    "it. Move it away or choose another --output-dir (--force never replaces such a folder)."
                )
        replaced += [folder, work, output_dir / f".tmp-{folder.name}", output_dir / f".old-{folder.name}"]
    inputs = {"teacher.source": recipe.teacher.source}
    inputs.update({f"data.files.{k}": v for k, v in (recipe.data.files or {}).items()})
    if recipe.data.source != "files" and not recipe.data.source.startswith("demo-"):
        inputs["data.source"] = recipe.data.source  # a dataset folder (load_dataset of a path) is an input too
    for field_name, value in inputs.items():
        if not value or not looks_local(value) and not Path(value).expanduser().exists():
            continue
        path = Path(value).expanduser().resolve()
        if path.is_dir() and (output_dir == path or path in output_dir.parents):
            raise RecipeError(
                f"--output-dir {output_dir} is inside {field_name} ({path}): the run would write into its own input. "
                "Choose an --output-dir outside it."
            )
        for target in replaced:
            target = target.resolve()
            if path == target or target in path.parents:
                raise RecipeError(
                    f"{field_name} ({path}) lies in {target}, which this run replaces. Move the input out of the "
                    "output folder, or rename the stage."
                )


def save_atomically(model, processor, target: Path, extra_files: dict[str, str]) -> None:
    """Write into a temporary sibling folder and rename it into place: a crash never leaves a half-written
    folder that from_pretrained would load."""
    root = target.parent
    tmp, old = inside(root, root / f".tmp-{target.name}"), inside(root, root / f".old-{target.name}")
    target = inside(root, target)
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException as err:  # any failure (a full disk raises SafetensorError, not OSError), Ctrl-C too
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)  # put the previous output back
        told = write_error(err, f"the stage output {target.name} in {root}") if isinstance(err, Exception) else err
        if told is err:
            raise
        raise told from err
    shutil.rmtree(old, ignore_errors=True)


def write_error(err: Exception, what: str) -> Exception:
    """What to tell the user about a failed write: a full disk, a read-only folder, or the error itself."""
    text = str(err)
    if getattr(err, "errno", None) == errno.ENOSPC or "No space left" in text or "os error 28" in text:
        return OSError(errno.ENOSPC, f"No space left on the device writing {what}: free space or choose another "
                       "--output-dir, then re-run (finished stages are kept)")  # fmt: skip
    if isinstance(err, PermissionError) or getattr(err, "errno", None) in (errno.EACCES, errno.EROFS, errno.EPERM):
        return PermissionError(
            f"Cannot write {what} ({getattr(err, 'strerror', None) or err}); make the folder writable "
            "(chmod -R u+w) or choose another --output-dir."
        )
    return err
