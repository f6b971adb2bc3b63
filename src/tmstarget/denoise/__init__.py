"""Denoising: confound selection, censoring, temporal filtering, smoothing and the denoised arrays."""
