"""Side information: what an evaluation gives the student beyond the synthetic images and their
class indices, in bytes per synthetic image (DD-Ranking's argument: teacher features, soft labels
and a teacher network are information too, so methods compare at equal cost).

- ``image_bytes``: one synthetic image as 8-bit pixels, C x H x W bytes (3 KiB for CIFAR);
- cached ELF features: the teacher feature of every image, stored float32 (512x4x4 = 32 KiB);
- soft labels (the set's own, or ``relabel: teacher``): ``num_classes`` float32 per image;
- a teacher network run during training (``teacher_targets: online``, ``lambda_kd > 0``): its
  parameter bytes, given separately (``teacher_param_bytes``) and amortised over the synthetic
  images in ``side_info_bytes_per_image``.

Hard class labels count as free (a byte or two per image).  Pure functions, no third-party imports.
"""

from __future__ import annotations

import math

FLOAT_BYTES = 4


def side_information(image_shape: tuple[int, ...], num_images: int, num_classes: int, *, soft_labels: bool,
                     feature_shape: tuple[int, ...] | None, teacher_param_bytes: int | None) -> dict:
    """The side-information columns of one student row (see the module docstring)."""
    kinds, per_image = [], 0.0
    if feature_shape:
        per_image += math.prod(feature_shape) * FLOAT_BYTES
        kinds.append(f"features {'x'.join(map(str, feature_shape))} float32")
    if soft_labels:
        per_image += num_classes * FLOAT_BYTES
        kinds.append(f"soft labels {num_classes} float32")
    if teacher_param_bytes:
        per_image += teacher_param_bytes / max(num_images, 1)
        kinds.append(f"teacher network {teacher_param_bytes / 2**20:.3g} MiB")
    return {"image_bytes": int(math.prod(image_shape)), "side_info_bytes_per_image": float(per_image),
            "teacher_param_bytes": int(teacher_param_bytes) if teacher_param_bytes else 0,
            "side_info": "; ".join(kinds) or "none"}


def human_bytes(value: float) -> str:
    """``3 KiB``, ``32 KiB``, ``0``: a byte count for tables."""
    if not value or value != value:
        return "0"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"
