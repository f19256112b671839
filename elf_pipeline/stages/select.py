"""The ``select`` stage: choose a student's training values (``students.select``) on the
validation accuracy of the baseline trained at each candidate, and write ``choice.json``."""

from __future__ import annotations

import os

from elf_pipeline.artifacts.choice import choose, read_candidate, write_choice


def select_student(inputs: list[str | os.PathLike], out: str | os.PathLike, candidates: list[dict], seeds: list[int],
                   evaluation: str, identity: dict) -> dict:
    """Read each candidate's rows (``inputs``, in the order of ``candidates``: seed and val_acc only)
    and write the choice with every candidate's validation accuracy to ``out``."""
    choice = choose(candidates, [read_candidate(path) for path in inputs], seeds)
    choice.update({"evaluation": evaluation, "seeds": list(seeds), "identity": dict(identity)})
    write_choice(out, choice)
    return choice
