rule data:
    """Raw dataset -> data.h5 (uint8 NHWC images, labels, normalisation statistics)."""
    input:
        stage_sources("data"),
    output:
        f"{RESULTS}/{{dataset}}/data.h5",
    log:
        f"{LOGS}/{{dataset}}/data.log",
    conda:
        ENV
    threads: 1
    params:
        settings=lambda w: as_json(elf_config.data_settings(config, w.dataset)),
    shell:
        f"{PYTHON} data --settings {{params.settings:q}} --out {{output:q}} > {{log:q}} 2>&1"
