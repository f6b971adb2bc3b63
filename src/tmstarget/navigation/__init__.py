"""Neuronavigation exports: one writer and reader per vendor (:mod:`.brainsight`, :mod:`.localite`,
:mod:`.ant` for visor2, :mod:`.slicer`), what they share (:mod:`.common`: target, T1w provenance, markers
TSV, target sphere), all of them for one unit (:mod:`.exports`) and the import steps (:mod:`.steps`)."""
