"""Quality control of one unit and of a dataset.

- :mod:`.text`: plain-text helpers (numbers, points, path scrubbing) shared by qc, report and run;
- :mod:`.metrics`: values read from the pipeline's JSON (tolerant reader, mean framewise displacement);
- :mod:`.headers`: header problems of the BOLD inputs (qform/sform, TR) read by qc itself (fMRIPrep route);
- :mod:`.findings`: every QC check with its level, topic and kind;
- :mod:`.actions`: what to do with the coordinate, by finding;
- :mod:`.verdict`: the thresholds and the verdict JSON of one unit (rule ``verdict``);
- :mod:`.gate`: the export gate (no navigator file for a FAILed unit);
- :mod:`.group`: the dataset table;
- :mod:`.provenance`: the command log of an output folder, as the report shows it.
"""
