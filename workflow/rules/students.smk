rule train_student:
    """Train one architecture under one evaluation on a synthetic set, all seeds; one row per seed."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        synset=f"{RESULTS}/{{dataset}}/distilled/{{method}}/ipc{{ipc}}/synset.h5",
        features=student_features,
        code=SOURCES["train_student"],
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
        evaluation=lambda w: as_json(elf_config.evaluation_config(config, w.evaluation, w.arch)),
        train=lambda w: as_json(elf_config.student_train_config(config, w.evaluation)),
        seeds=" ".join(str(seed) for seed in config["students"]["seeds"]),
        identity=student_identity,
        features=student_teacher_args,
        device=DEVICE,
    shell:
        f"{PYTHON} train-student --data {{input.data:q}} --synset {{input.synset:q}} {{params.features}} "
        "--arch {wildcards.arch} --evaluation {params.evaluation:q} --train {params.train:q} --seeds {params.seeds} "
        "--identity {params.identity:q} --device {params.device} --out {output:q} > {log:q} 2>&1"
