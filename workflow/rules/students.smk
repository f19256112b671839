rule train_student:
    """Train one architecture under one evaluation on a synthetic set, all seeds; one row per seed."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        synset=f"{RESULTS}/{{dataset}}/distilled/{{method}}/ipc{{ipc}}/synset.h5",
        features=student_features,
        choice=student_choice,
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
        settings=lambda w: as_json(elf_config.student_settings(config, w.evaluation, w.arch, student_identity(w))),
        features=student_teacher_args,
        choice=lambda w, input: " ".join(f"--choice {path}" for path in input.choice),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} train-student --data {{input.data:q}} --synset {{input.synset:q}} {{params.features}} {{params.choice}} "
        "--settings {params.settings:q} {params.device} --out {output:q} > {log:q} 2>&1"


rule train_candidate:
    """students.select: the selection evaluation (baseline) of one student at one candidate, select seeds."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        synset=f"{RESULTS}/{{dataset}}/distilled/{{method}}/ipc{{ipc}}/synset.h5",
        code=SOURCES["train_student"],
    output:
        f"{RESULTS}/{{dataset}}/select/{{method}}/ipc{{ipc}}/{{arch}}/{{candidate}}.parquet",
    log:
        f"{LOGS}/{{dataset}}/select/{{method}}_ipc{{ipc}}_{{arch}}_{{candidate}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/select/{{method}}_ipc{{ipc}}_{{arch}}_{{candidate}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.candidate_settings(config, w.arch, w.candidate, select_identity(w))),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} train-student --data {{input.data:q}} --synset {{input.synset:q}} "
        "--settings {params.settings:q} {params.device} --out {output:q} > {log:q} 2>&1"


rule select_student:
    """students.select: the candidate with the best validation accuracy (never test) -> choice.json."""
    input:
        candidates=candidate_files,
        code=SOURCES["select_student"],
    output:
        f"{RESULTS}/{{dataset}}/select/{{method}}/ipc{{ipc}}/{{arch}}/choice.json",
    log:
        f"{LOGS}/{{dataset}}/select/{{method}}_ipc{{ipc}}_{{arch}}_choice.log",
    conda:
        ENV
    threads: 1
    params:
        settings=lambda w: as_json(elf_config.selection_settings(config, select_identity(w))),
    shell:
        f"{PYTHON} select-student {{input.candidates:q}} --settings {{params.settings:q}} --out {{output:q}} > {{log:q}} 2>&1"
