"""Inputs: BIDS and fMRIPrep lookup, the preflight checks and the BIDS-Derivatives names."""
