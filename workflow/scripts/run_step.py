# Thin adapter: every rule runs this script with params.step naming one function of tmstarget.run.steps.
from tmstarget.run.steps import run_from_snakemake

run_from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
