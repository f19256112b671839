"""Model zoo. ``build(name, channels, num_classes, image_size)`` is the one entry point."""

from elf_pipeline.models.registry import UnknownArchitecture, available, build, is_known

__all__ = ["UnknownArchitecture", "available", "build", "is_known"]
