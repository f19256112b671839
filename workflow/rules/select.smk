rule select_candidate:
    """students.select: the selection evaluation (baseline) of one student at one candidate, select seeds."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        synset=f"{RESULTS}/{{dataset}}/distill/{{method}}/ipc{{ipc}}/synset.h5",
        code=stage_sources("students"),
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
        f"{PYTHON} students --data {{input.data:q}} --synset {{input.synset:q}} "
        "--settings {params.settings:q} {params.device} --out {output:q} > {log:q} 2>&1"


rule select:
    """students.select: the candidate with the best validation accuracy (never test) -> choice.json."""
    input:
        candidates=candidate_files,
        code=stage_sources("select"),
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
        f"{PYTHON} select {{input.candidates:q}} --settings {{params.settings:q}} --out {{output:q}} > {{log:q}} 2>&1"
