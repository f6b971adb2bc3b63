"""Running: the command line, the Snakemake step adapters and the run record."""
