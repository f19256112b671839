rule features:
    """The teacher's output after every block for every synthetic image (one HDF5 per set x teacher)."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        synset=f"{RESULTS}/{{dataset}}/distill/{{method}}/ipc{{ipc}}/synset.h5",
        teacher=f"{RESULTS}/{{dataset}}/teachers/{{teacher}}/model.pt",
        code=stage_sources("features"),
    output:
        f"{RESULTS}/{{dataset}}/features/{{method}}/ipc{{ipc}}/{{teacher}}.h5",
    log:
        f"{LOGS}/{{dataset}}/features/{{method}}_ipc{{ipc}}_{{teacher}}.log",
    priority: 10  # on the critical path to the ELF students
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        device=RUN_ARGS,
    shell:
        f"{PYTHON} features --synset {{input.synset:q}} --teacher {{input.teacher:q}} --data {{input.data:q}} "
        "{params.device} --out {output:q} > {log:q} 2>&1"
