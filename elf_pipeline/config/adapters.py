"""Which students of a study train through a feature adapter: every (student, teacher) pair its ELF
evaluations use, with both feature shapes from torch-free arithmetic (``models.shapes``), and the
warning ``config.checks.check_config`` prints before any job runs."""

from __future__ import annotations

from elf_pipeline.config import experts_config, student_jobs, study_jobs, teacher_name, teacher_ref, teacher_value
from elf_pipeline.datasets.catalog import SOURCE_CHANNELS
from elf_pipeline.models.registry import default_split


def _teacher_arch(config: dict, ref: dict) -> str | None:
    if ref["source"] == "distillation":
        return experts_config(config)["arch"]
    return config["teachers"].get(ref["name"], {}).get("arch")


def adapter_pairs(config: dict) -> list[dict]:
    """Every (dataset, evaluation, student, teacher) whose ELF feature terms the study trains, with
    both feature shapes (torch-free arithmetic, ``models.shapes``; None where only a build can tell)
    and whether the evaluation names its ``adapter`` explicitly."""
    from elf_pipeline.models.shapes import feature_shape  # torch-free

    pairs, seen = [], set()
    for job in [*student_jobs(config), *study_jobs(config)]:
        dataset, evaluation, arch = job["dataset"], job["evaluation"], job["arch"]
        block = config["evaluations"][evaluation]
        if block.get("loss_mode", "task") == "task" or (dataset, evaluation, arch) in seen:
            continue
        seen.add((dataset, evaluation, arch))
        ref = teacher_ref(teacher_value(config, evaluation, arch))
        teacher_arch = _teacher_arch(config, ref) if ref else None
        if teacher_arch is None:
            continue
        data = config["datasets"][dataset]
        channels = data.get("channels") or SOURCE_CHANNELS.get(data["source"], 3)
        size = data["image_size"]
        student_layer = block.get("student_layer") or default_split(arch)
        teacher_layer = block.get("teacher_layer") or default_split(teacher_arch)
        pairs.append({"dataset": dataset, "image_size": size, "evaluation": evaluation, "student": arch,
                      "student_layer": student_layer, "student_shape": feature_shape(arch, channels, size, student_layer),
                      "teacher": teacher_name(config, evaluation, arch), "teacher_arch": teacher_arch,
                      "teacher_layer": teacher_layer,
                      "teacher_shape": feature_shape(teacher_arch, channels, size, teacher_layer),
                      "explicit_adapter": "adapter" in block})
    return pairs


def adapter_warnings(config: dict) -> list[str]:
    """One line per (evaluation, dataset, teacher) naming the students whose split output and teacher
    feature differ in shape, under an evaluation that does not name its ``adapter``: they train
    through a learned adapter (1x1 conv + resize), which the official code never uses."""
    from elf_pipeline.models.shapes import describe

    groups: dict[tuple, list[str]] = {}
    for pair in adapter_pairs(config):
        student, teacher = pair["student_shape"], pair["teacher_shape"]
        if student is None or teacher is None or student == teacher or pair["explicit_adapter"]:
            continue
        key = (pair["evaluation"], pair["dataset"], pair["image_size"], pair["teacher"], pair["teacher_arch"],
               pair["teacher_layer"], describe(teacher))
        groups.setdefault(key, []).append(f"{pair['student']} ({pair['student_layer']}: {describe(student)})")
    return [f"evaluations.{evaluation}: on {dataset} at {size} px, teacher {teacher} ({arch} {layer}: {shape}) does not "
            f"match {', '.join(students)}: {'it trains' if len(students) == 1 else 'they train'} through a feature "
            f"adapter (a teacher with a matching feature avoids it; adapter: pair or coupled in the evaluation makes it "
            f"deliberate)"
            for (evaluation, dataset, size, teacher, arch, layer, shape), students in groups.items()]
