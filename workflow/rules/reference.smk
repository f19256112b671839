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
        train=as_json(elf_config.full_train_config(config)),
        seeds=" ".join(str(seed) for seed in elf_config.reference_config(config)["full"]["seeds"]),
        train_limit=elf_config.reference_config(config)["full"]["train_limit"] or "none",
        identity=lambda w: as_json({"dataset": w.dataset}),
        device=DEVICE,
    shell:
        f"{PYTHON} train-full --data {{input.data:q}} --arch {{wildcards.arch}} --train {{params.train:q}} "
        "--seeds {params.seeds} --train-limit {params.train_limit} --identity {params.identity:q} "
        "--device {params.device} --out {output:q} > {log:q} 2>&1"
