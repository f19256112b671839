rule reference:
    """Full-real-data reference: one student architecture trained on the real training set (all
    reference seeds), the upper-bound row of the report tables."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        code=stage_sources("reference"),
    output:
        f"{RESULTS}/{{dataset}}/reference/{{arch}}.parquet",
    log:
        f"{LOGS}/{{dataset}}/reference/{{arch}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/reference/{{arch}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.full_settings(config, w.dataset, w.arch)),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} reference --data {{input.data:q}} --settings {{params.settings:q}} {{params.device}} "
        "--out {output:q} > {log:q} 2>&1"
