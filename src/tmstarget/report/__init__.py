"""Self-contained HTML QC reports for clinicians: one per subject (unit) and one per dataset.

The package is split as NiPreps splits reportlets from the page:

- :mod:`.common`: tolerant access to one unit's inputs (:class:`SubjectContext`), formatting helpers;
- :mod:`.verdict`: the unit's verdict as plain data (``*_desc-verdict_qc.json``, computed once by
  :mod:`tmstarget.qc.verdict` with the run's thresholds; the report judges nothing itself), its findings,
  thresholds, reliability words and candidate targets;
- :mod:`.navigator`: the technician's box (T1w to load, target and entry, handle, which nav/ file goes where);
- :mod:`.sections`: the tables and words under the figures (summary, motion, seed, uncertainty, literature,
  caveats, provenance, registration);
- :mod:`.methods`: the Glossary and the Methods paragraph (command, configuration, version, date);
- :mod:`.figures`: every figure, drawn once per unit and shared by the subject page and the reportlet
  files for ``snakemake --report``;
- :mod:`.page`: the reportlet spec, Jinja2 templates (``templates/``, autoescape on) and the writers.

Privacy and safety: input text is escaped by the templates and absolute paths are cut to file names;
NIfTI header text fields are never read; the page loads nothing (figures are ``data:`` URIs, a
Content-Security-Policy forbids other resources, no JavaScript except the slice viewer of :mod:`.viewer`,
a sandboxed iframe whose inline scripts the policy allows by hash).
"""

from tmstarget.qc.group import GROUP_COLUMNS, group_row, write_group_tsv  # noqa: F401
from tmstarget.qc.metrics import mean_fd_mm  # noqa: F401
from tmstarget.qc.text import scrub_paths  # noqa: F401
from tmstarget.report.common import STATUS_COLOURS, SubjectContext, Unavailable  # noqa: F401
from tmstarget.report.figures import (COIL_GLYPH_RADIUS_MM, HANDLE_GLYPH_LENGTH_MM, carpet_rows, coil_geometry,  # noqa: F401
                      coil_glyph_ras_mm, draw_coil_glyph, figure_bytes, read_masked_timeseries, render_bold_to_t1w,
                      render_carpet_after, render_carpet_before, render_gsr, render_literature, render_motion,
                      render_seed_map, render_seed_tsnr, render_t1w_to_mni, render_target_t1w, render_uncertainty)
from tmstarget.report.page import (HTML_REPORTLETS, SUBJECT_REPORTLETS, Rendered, Reportlet, build_group_report,  # noqa: F401
                   build_subject_report, esc, render_reportlet, render_sections, render_subject_html,
                   reportlet_captions, reportlet_filenames, reportlet_titles, write_reportlets)
from tmstarget.report.navigator import (WORLD_CONVENTION_WORDS, handle_angle_from_posterior_deg,  # noqa: F401
                                        handle_in_words, navigator_view)
from tmstarget.report.sections import BOOTSTRAP_CAVEAT, CAVEATS  # noqa: F401
from tmstarget.report.verdict import reliability_words, unit_verdict  # noqa: F401
