# ELF: cross-architecture evaluation of dataset distillation.
#   snakemake --cores all [--use-conda] [--configfile tests/configs/smoke.yaml]
from snakemake.utils import min_version

min_version("9.0")


# A --configfile replaces the embedded default instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/experts.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/expert_teacher.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/students.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/safekeeping.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
        figure_targets(),
