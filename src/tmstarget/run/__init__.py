"""Running: the command line, Snakemake through its API (engine) and the Snakemake step adapters."""
