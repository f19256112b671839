rule students:
    """Train one architecture under one evaluation on a synthetic set, all seeds; one row per seed."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        synset=f"{RESULTS}/{{dataset}}/distill/{{method}}/ipc{{ipc}}/synset.h5",
        features=student_features,
        choice=student_choice,
        code=stage_sources("students"),
    output:
        f"{RESULTS}/{{dataset}}/students/{{method}}/ipc{{ipc}}/{{arch}}/{{evaluation}}.parquet",
    log:
        f"{LOGS}/{{dataset}}/students/{{method}}_ipc{{ipc}}_{{arch}}_{{evaluation}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/students/{{method}}_ipc{{ipc}}_{{arch}}_{{evaluation}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.student_settings(config, w.evaluation, w.arch, student_identity(w))),
        features=student_teacher_args,
        choice=lambda w, input: " ".join(f"--choice {path}" for path in input.choice),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} students --data {{input.data:q}} --synset {{input.synset:q}} {{params.features}} {{params.choice}} "
        "--settings {params.settings:q} {params.device} --out {output:q} > {log:q} 2>&1"
