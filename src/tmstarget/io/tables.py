"""Reading the tables tmstarget takes as input (fMRIPrep confounds TSV), for preflight and denoising."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tmstarget.errors import InputError


def read_confounds(path: str | os.PathLike) -> pd.DataFrame:
    """Read an fMRIPrep ``*_desc-confounds_timeseries.tsv`` (``n/a`` becomes NaN)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: confounds file not found; it must sit beside the BOLD run "
                         "(fMRIPrep's *_desc-confounds_timeseries.tsv)")
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a", "N/A", "NaN", "nan", ""], keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read this confounds table ({exc}); regenerate it") from None
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise InputError(f"{path.name}: non-numeric values in column(s) {bad[:5]}; only numbers and "
                         "'n/a' are allowed in a confounds table")
    return df
