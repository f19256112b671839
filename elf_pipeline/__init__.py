"""ELF pipeline: cross-architecture evaluation of dataset distillation.

Every stage of the workflow is a plain function in a module of this package and a
subcommand of :mod:`elf_pipeline.cli`.
"""

__version__ = "0.1.0"
