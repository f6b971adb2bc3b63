"""Reading and writing files: atomic JSON/TSV writers and the one NIfTI header module."""
