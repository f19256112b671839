"""ELF pipeline: cross-architecture evaluation of dataset distillation.

Every stage of the workflow is a module (or package) of ``elf_pipeline.stages``, a subcommand of
:mod:`elf_pipeline.cli` and a rule of the same name; they share the training ``engine``, the
artifact formats, ``models``, ``datasets``, the torch-free ``config`` and ``infra``.
"""

__version__ = "0.1.0"
