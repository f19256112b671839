rule train_teacher:
    """A teacher of the distillation family trained on the real training set."""
    input:
        data=f"{RESULTS}/{{dataset}}/data.h5",
        code=SOURCES["train_teacher"],
    output:
        model=f"{RESULTS}/{{dataset}}/teachers/{{teacher}}/model.pt",
        history=f"{RESULTS}/{{dataset}}/teachers/{{teacher}}/history.json",
    log:
        f"{LOGS}/{{dataset}}/teachers/{{teacher}}.log",
    benchmark:
        f"{BENCH}/{{dataset}}/teachers/{{teacher}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU_PER_JOB,
    params:
        arch=lambda w: config["teachers"][w.teacher]["arch"],
        train=lambda w: as_json(config["teachers"][w.teacher]["train"]),
        checkpoint_epoch=lambda w: config["teachers"][w.teacher].get("checkpoint_epoch") or "none",
        train_limit=lambda w: config["teachers"][w.teacher].get("train_limit") or "none",
        eval_every=lambda w: config["teachers"][w.teacher].get("eval_every", 1),
        max_in_memory_gb=lambda w: config["teachers"][w.teacher].get("max_in_memory_gb", 4.0),
        seed=lambda w: config["teachers"][w.teacher].get("seed", 0),
        device=DEVICE,
    shell:
        f"{PYTHON} train-teacher --data {{input.data:q}} --arch {{params.arch}} --train {{params.train:q}} "
        "--checkpoint-epoch {params.checkpoint_epoch} --train-limit {params.train_limit} --eval-every {params.eval_every} "
        "--max-in-memory-gb {params.max_in_memory_gb} "
        "--seed {params.seed} --device {params.device} --out-model {output.model:q} --out-history {output.history:q} "
        "> {log:q} 2>&1"
