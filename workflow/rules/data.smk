rule prepare_data:
    """Raw dataset -> data.h5 (uint8 NHWC images, labels, normalisation statistics)."""
    input:
        SOURCES["prepare_data"],
    output:
        f"{RESULTS}/{{dataset}}/data.h5",
    log:
        f"{LOGS}/{{dataset}}/prepare_data.log",
    conda:
        ENV
    threads: 1
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
        root=lambda w: config["datasets"][w.dataset].get("root") or "none",
        image_size=lambda w: config["datasets"][w.dataset]["image_size"],
        resize=lambda w: config["datasets"][w.dataset].get("resize", "pad"),
        train_limit=lambda w: config["datasets"][w.dataset].get("train_limit") or "none",
        options=lambda w: prepare_options(config["datasets"][w.dataset]),
    shell:
        f"{PYTHON} prepare-data --source {{params.source}} --root {{params.root:q}} "
        "--image-size {params.image_size} --resize {params.resize} --train-limit {params.train_limit} "
        "{params.options} --out {output:q} > {log:q} 2>&1"
