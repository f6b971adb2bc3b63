"""Builders shared by the tests: the one place that writes test inputs (tests/ is on ``sys.path``).

- ``nifti``: the NIfTI and JSON writers every builder uses (qform = sform, code 1; TR in the header).
- ``bids``: minimal raw BIDS and fMRIPrep trees (names for input discovery, small random images).
- ``mini_fmriprep``: a small but complete fMRIPrep tree the whole downstream workflow runs on.
- ``denoise_run``: one run in fMRIPrep layout with a full confounds table (denoising, reliability).
- ``report_unit``: one unit's report inputs and its verdict, following docs/architecture.md.
- ``report_pages``: readers of a rendered report page (text and markup outside the "not usable" folds).
- ``sphere_head``: a spherical phantom head (scalp and navigation geometry).
- ``vendor_files``: the neuronavigation vendors' own file readers (navigation).
- ``realdata_bids``: BIDS trees made from the public real scans (real-data tests, benchmarks).
- ``workflow``: the demo subjects and the CLI run in a subprocess.
- ``browser``: headless Chromium over the DevTools protocol (browser tests, scripts/report_screenshots.py).
"""
