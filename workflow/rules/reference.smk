rule train_full:
    """Full-real-data reference: one student architecture trained on the real training set (all
    reference seeds), the upper-bound row of the report tables."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        code=SOURCES["train_full"],
    output:
        f"{RESULTS}/{{dataset}}/full/{{arch}}.parquet",
    log:
        f"{LOGS}/{{dataset}}/full/{{arch}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/full/{{arch}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.full_settings(config, w.dataset, w.arch)),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} train-full --data {{input.data:q}} --settings {{params.settings:q}} {{params.device}} "
        "--out {output:q} > {log:q} 2>&1"
