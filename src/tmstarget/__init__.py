"""tmstarget: individualized sgACC-anticorrelation TMS targets from resting-state fMRI."""

__version__ = "0.1.0"
