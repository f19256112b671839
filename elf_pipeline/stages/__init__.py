"""The workflow's stages: one module (or package) per stage, named as its rule, its CLI command and
its output folder (``stages/students.py``: rule ``students``, ``elf-pipeline students``,
``results/<dataset>/students/``). A stage imports the engine, the artifact formats, models, datasets,
config and infrastructure, never another stage."""
