"""The optional ``studies`` block (the empirical study and the ELF ablation): which architectures
and student jobs it adds. Torch-free, read while the Snakefile parses; ``config`` re-exports it."""

from __future__ import annotations

from typing import Any

STUDY_PARTS = ("similarity", "norm", "ablation")


def gap_archs(studies: dict) -> list[str]:
    """The architectures of the similarity and norm parts, reference first (none without those parts)."""
    if not (studies.get("similarity") or studies.get("norm")):
        return []
    names = [studies.get("reference", "convnet"), *((studies.get("similarity") or {}).get("archs") or [])]
    for own, instance in ((studies.get("norm") or {}).get("pairs") or {}).items():
        names += [own, instance]
    return list(dict.fromkeys(names))


def study_archs(config: dict) -> list[str]:
    """Architectures the optional ``studies`` block trains (reference first, then the similarity,
    norm and ablation architectures, each once, in config order)."""
    studies = config.get("studies")
    if not studies:
        return []
    names = [studies.get("reference", "convnet"), *gap_archs(studies), *((studies.get("ablation") or {}).get("archs") or [])]
    return list(dict.fromkeys(names))


def study_jobs(config: dict) -> list[dict[str, Any]]:
    """The student jobs of the ``studies`` block on its one synthetic set: the similarity and norm
    archs x ``studies.evaluations``, and the ablation archs x ``studies.ablation.evaluations``
    (each job once)."""
    studies = config.get("studies")
    if not studies:
        return []
    ablation = studies.get("ablation") or {}
    pairs = [(a, e) for a in gap_archs(studies) for e in studies.get("evaluations", ["baseline"])]
    pairs += [(a, e) for a in ablation.get("archs") or [] for e in ablation.get("evaluations") or []]
    return [{"dataset": studies["dataset"], "method": studies["method"], "ipc": studies["ipc"], "arch": a, "evaluation": e}
            for a, e in dict.fromkeys(pairs)]
