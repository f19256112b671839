# The paper's empirical study (config block `studies`): `snakemake study_similarity study_norm study_ablation`.
# Its students are ordinary students jobs on one synthetic set; these rules only tabulate them.


rule study_similarity:
    """Accuracy gap to the distillation model vs. design distance (differing design choices)."""
    input:
        runs=lambda w: study_parquets("similarity"),
        code=stage_sources("study"),
    output:
        table=f"{RESULTS}/study/similarity.parquet",
        markdown=f"{RESULTS}/study/similarity.md",
        plot=report(f"{RESULTS}/study/similarity.png", caption="../report/study_similarity.rst", category="Study"),
    log:
        f"{LOGS}/study/similarity.log",
    conda:
        ENV
    threads: 1
    params:
        **study_args(),
        archs=" ".join((STUDY.get("similarity") or {}).get("archs", [])),
    shell:
        f"{PYTHON} study similarity {{input.runs:q}} --reference {{params.reference}} --evaluations {{params.evaluations}} "
        "--archs {params.archs} --out-table {output.table:q} --out-markdown {output.markdown:q} --out-plot {output.plot:q} "
        "> {log:q} 2>&1"


rule study_norm:
    """The gap with each architecture's own normalisation and with instance norm inserted."""
    input:
        runs=lambda w: study_parquets("norm"),
        code=stage_sources("study"),
    output:
        table=f"{RESULTS}/study/norm.parquet",
        markdown=f"{RESULTS}/study/norm.md",
        plot=report(f"{RESULTS}/study/norm.png", caption="../report/study_norm.rst", category="Study"),
    log:
        f"{LOGS}/study/norm.log",
    conda:
        ENV
    threads: 1
    params:
        **study_args(),
        pairs=" ".join(f"{own}={instance}" for own, instance in ((STUDY.get("norm") or {}).get("pairs") or {}).items()),
    shell:
        f"{PYTHON} study norm {{input.runs:q}} --reference {{params.reference}} --evaluations {{params.evaluations}} "
        "--pairs {params.pairs} --out-table {output.table:q} --out-markdown {output.markdown:q} --out-plot {output.plot:q} "
        "> {log:q} 2>&1"


rule study_ablation:
    """Every ELF ablation evaluation on every ablation architecture, against the first (reference) evaluation."""
    input:
        runs=lambda w: study_parquets("ablation"),
        code=stage_sources("study"),
    output:
        table=f"{RESULTS}/study/ablation.parquet",
        markdown=f"{RESULTS}/study/ablation.md",
        plot=report(f"{RESULTS}/study/ablation.png", caption="../report/study_ablation.rst", category="Study"),
    log:
        f"{LOGS}/study/ablation.log",
    conda:
        ENV
    threads: 1
    params:
        archs=" ".join((STUDY.get("ablation") or {}).get("archs", [])),
        evaluations=" ".join((STUDY.get("ablation") or {}).get("evaluations", [])),
    shell:
        f"{PYTHON} study ablation {{input.runs:q}} --archs {{params.archs}} --evaluations {{params.evaluations}} "
        "--out-table {output.table:q} --out-markdown {output.markdown:q} --out-plot {output.plot:q} > {log:q} 2>&1"
