rule experts:
    """One MTT expert trajectory: a network trained on the real data, its parameters after every
    epoch (one file per expert, so adding experts trains only the new ones)."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        code=stage_sources("experts"),
    output:
        f"{RESULTS}/{{dataset}}/experts/{{expert_arch}}/expert_{{index}}.h5",
    log:
        f"{LOGS}/{{dataset}}/experts/{{expert_arch}}_{{index}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/experts/{{expert_arch}}_{{index}}.tsv"
    wildcard_constraints:
        expert_arch=re.escape(elf_config.experts_config(config)["arch"]),
        index=r"\d+",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        # without num_experts: adding experts must not change the existing experts' params
        settings=lambda w: as_json(elf_config.expert_settings(config, int(w.index))),
        device=TRAIN_RUN_ARGS,
    shell:
        f"{PYTHON} experts --data {{input.data:q}} --settings {{params.settings:q}} {{params.device}} "
        "--out {output:q} > {log:q} 2>&1"
