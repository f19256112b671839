rule distill:
    """data.h5 -> synthetic set (synset.h5) for one method and IPC."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        experts=distill_experts,
        imported=distill_imports,
        code=distill_sources,
    output:
        f"{RESULTS}/{{dataset}}/distill/{{method}}/ipc{{ipc}}/synset.h5",
    log:
        f"{LOGS}/{{dataset}}/distill/{{method}}_ipc{{ipc}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/distill/{{method}}_ipc{{ipc}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        settings=lambda w: as_json(elf_config.distill_settings(config, w.dataset, w.method, int(w.ipc))),
        experts=lambda w, input: f"--experts {input.experts}" if input.experts else "",
        device=RUN_ARGS,
    shell:
        f"{PYTHON} distill --data {{input.data:q}} --settings {{params.settings:q}} {{params.experts}} "
        "{params.device} --out {output:q} > {log:q} 2>&1"
