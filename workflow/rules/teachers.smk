rule teachers:
    """A teacher of the distillation family trained on the real training set."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        code=stage_sources("teachers"),
    output:
        model=f"{RESULTS}/{{dataset}}/teachers/{{teacher}}/model.pt",
        history=f"{RESULTS}/{{dataset}}/teachers/{{teacher}}/history.json",
    log:
        f"{LOGS}/{{dataset}}/teachers/{{teacher}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/teachers/{{teacher}}.tsv"
    priority: 10  # the teacher is on the critical path (teacher -> features -> ELF students): start it first
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.teacher_settings(config, w.teacher)),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} teachers --data {{input.data:q}} --settings {{params.settings:q}} {{params.device}} "
        "--out-model {output.model:q} --out-history {output.history:q} > {log:q} 2>&1"
