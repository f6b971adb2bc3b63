"""Registration helpers shared by the anatomical and BOLD preprocessing: determinism, working
resolution and an initialisation that does not depend on head position or file storage.

Determinism (:func:`pin_itk_threads`)
    ANTs splits its metric over ITK threads; with more than one thread the sums are added in an order
    that depends on scheduling, so the same input gives transforms that differ by up to several mm
    (measured on a real T1w: 1 vs 2 threads, max 6.3 mm). ``ANTS_RANDOM_SEED`` fixes the metric's
    random sampling but not this. Every registration of tmstarget therefore runs with one ITK thread:
    :func:`pin_itk_threads` sets ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` before ITK first starts
    its thread pool in the process (ITK reads the variable once, at its first multi-threaded filter;
    a later change has no effect). Workflow jobs are separate processes, so each is pinned whatever
    ``--cores`` or the cluster node. The cost is measured by ``benchmarks/anat_resolution.py``.

Working resolution (:func:`working_image`)
    N4, skull stripping, T1w -> template affine + SyN and Atropos run on a copy of the T1w resampled
    to ``anat_working_resolution_mm`` (default 1 mm) when the T1w is finer; transforms are in world
    (physical) coordinates, so they stay valid for the T1w's own grid, and masks and tissue maps are
    resampled back onto it. A 1.5 mm T1w (the demo) is used as it is.

Initialisation (:func:`search_initial_transform`)
    Before the affine stage (T1w -> template) and the rigid BOLD -> T1w registration, the moving image's
    centre of mass is put on the fixed image's and every rotation on a grid of 15 degrees over +-30
    degrees about x, y and z (125 starts), each with shifts along the head axis, is scored on 4 mm
    copies inside the fixed brain mask (correlation for the same contrast, mutual information across
    contrasts); the best start is handed to ANTs, whose multi-resolution optimisation refines it. So
    a head lying 10-20 degrees rotated and centimetres shifted in the scanner, a lost header
    orientation (qform/sform codes 0) or another voxel storage order all start near the answer.
    fMRIPrep does the same job with ANTs' ``antsAI`` (``antsAffineInitializer``: the same kind of
    rotation grid, each start refined by a short local affine optimisation); against nilearn's
    brain-only template and a whole-head T1w that local search ended sheared and rotated (template
    correlation 0.16 after the start, 0.60 for the plain centre-of-mass start), so the search here is
    exhaustive and rigid.
"""

from __future__ import annotations

import logging
import os

import ants
import numpy as np

log = logging.getLogger(__name__)

#: default working resolution of the anatomical processing (mm; config ``preprocessing.anat_working_resolution_mm``)
DEFAULT_WORKING_RESOLUTION_MM = 1.0

#: rotation search before every T1w -> template and BOLD -> T1w registration
SEARCH_ARC_DEG = 30.0
SEARCH_STEP_DEG = 15.0
SEARCH_RESOLUTION_MM = 4.0


def pin_itk_threads(n_threads: int = 1) -> None:
    """Make every ITK/ANTs filter of this process use ``n_threads`` threads (see the module docstring).

    Must run before the process's first multi-threaded ITK filter; ITK ignores later changes.
    ``TMSTARGET_UNPINNED_ITK_THREADS=N`` (environment) overrides ``n_threads``: only for
    ``benchmarks/anat_resolution.py``, which measures what the pin costs; results then depend on N.
    """
    override = os.environ.get("TMSTARGET_UNPINNED_ITK_THREADS")
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(override or n_threads))


#: Seed of the random metric sampling in every antspyx registration. Unseeded, ANTs draws new
#: samples each run and the same input gives different motion estimates (up to 0.3 mm seen) and
#: transforms, so an interrupted and resumed run would not reproduce an uninterrupted one.
ANTS_RANDOM_SEED = 20120901


def make_ants_repeatable(seed: int = ANTS_RANDOM_SEED) -> None:
    """Fix the random seed antspyx passes to antsRegistration (``--random-seed``).

    The seed alone does not make a multi-threaded ANTs registration repeatable (the metric's
    per-thread sums are added in scheduling order), so every ITK filter of the process is also
    pinned to one thread (:func:`pin_itk_threads`; this must happen before
    the process's first ITK filter, which is why both preprocessing steps call this first).
    """
    import ants.config

    pin_itk_threads(1)
    ants.config._random_seed = int(seed)


def finest_spacing_mm(image: "ants.ANTsImage") -> float:
    return float(min(image.spacing))


def working_image(image: "ants.ANTsImage", resolution_mm: float) -> "ants.ANTsImage":
    """``image`` resampled (linear) to isotropic ``resolution_mm`` voxels when it is finer than that
    (by more than 10 %), else ``image`` itself. Same world: direction and origin are kept."""
    if finest_spacing_mm(image) >= 0.9 * float(resolution_mm):
        return image
    return ants.resample_image(image, (float(resolution_mm),) * 3, use_voxels=False, interp_type=0)


def to_grid(image: "ants.ANTsImage", target: "ants.ANTsImage", interpolation: str = "linear") -> "ants.ANTsImage":
    """``image`` resampled onto the grid of ``target`` (same world; identity transform)."""
    if image.shape == target.shape and np.allclose(image.spacing, target.spacing) and \
            np.allclose(image.origin, target.origin) and np.allclose(image.direction, target.direction):
        return image
    return ants.resample_image_to_target(image, target, interp_type=interpolation)


def pad_edges(image: "ants.ANTsImage", n_voxels: int = 1) -> "ants.ANTsImage":
    """``image`` with ``n_voxels`` layers of its edge values added on every side (same world).

    A working-resolution copy's outermost voxel centres can lie inside the fine grid's (a 0.7 mm grid
    of 229 slices ends 159.6 mm from its first centre, the 1 mm copy's last centre at 159 mm), and ITK
    resamples points beyond half a voxel past the last centre as 0; dividing by a bias field resampled
    that way gave inf/NaN in the preprocessed T1w's last slice. Resampling the padded copy extends it
    by its edge values instead.
    """
    data = np.pad(image.numpy(), n_voxels, mode="edge")
    direction = np.asarray(image.direction, float)
    origin = np.asarray(image.origin, float) - direction @ (np.asarray(image.spacing, float) * n_voxels)
    return ants.from_numpy(data.astype(np.float32), origin=tuple(origin), spacing=tuple(image.spacing),
                           direction=direction)


def _rotation_xyz_deg(angles_deg) -> np.ndarray:
    rx, ry, rz = np.deg2rad(angles_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def _mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Mutual information (nats) of two samples of intensities (histogram estimate)."""
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    joint = joint / max(joint.sum(), 1.0)
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def _score(fixed_values: np.ndarray, moving_values: np.ndarray, metric: str) -> float:
    if metric == "correlation":
        x, y = fixed_values - fixed_values.mean(), moving_values - moving_values.mean()
        d = np.sqrt((x * x).sum() * (y * y).sum())
        return float((x * y).sum() / d) if d > 0 else -1.0
    return _mutual_information(fixed_values, moving_values)


def _low_resolution_arrays(image: "ants.ANTsImage", resolution_mm: float):
    """Smoothed, resampled copy of an ANTs image as (array, RAS affine)."""
    from tmstarget.preproc.headers import ants_affine_ras

    smooth = _search_grid(ants.smooth_image(image, resolution_mm / 2.0, sigma_in_physical_coordinates=True),
                          resolution_mm)
    return smooth.numpy().astype(np.float32), ants_affine_ras(smooth)


def centre_of_mass_ras(data: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    weights = np.clip(np.asarray(data, float), 0, None)
    ijk = np.asarray(ndimage.center_of_mass(weights))
    return (affine_ras @ np.append(ijk, 1.0))[:3]


def search_initial_transform(fixed: "ants.ANTsImage", moving: "ants.ANTsImage", out_mat: str | os.PathLike,
                             fixed_mask: "ants.ANTsImage | None" = None, metric: str = "correlation",
                             moving_mask: "ants.ANTsImage | None" = None, arc_deg: float = SEARCH_ARC_DEG,
                             step_deg: float = SEARCH_STEP_DEG, shifts_mm=(-30, -20, -10, 0, 10, 20, 30),
                             resolution_mm: float = SEARCH_RESOLUTION_MM) -> dict:
    """Rigid start found by centre-of-mass alignment and an exhaustive search over rotations.

    Both images are smoothed and resampled to ``resolution_mm``; the moving image's centre of mass
    (of ``moving_mask`` if given, else of its intensities) is put on the fixed image's (of
    ``fixed_mask`` if given); then every rotation on a grid of ``step_deg`` over +-``arc_deg``
    about the x, y and z axes (through that centre) combined with a shift along the
    superior-inferior axis of the fixed image (``shifts_mm``: a whole head's centre of mass lies
    below a brain's, by how much depends on the field of view) is scored inside ``fixed_mask`` by
    ``metric`` (``"correlation"`` for the same contrast, ``"mi"``, mutual information, across
    contrasts). The best start is written as an ITK affine (``out_mat``, fixed -> moving points,
    LPS) for ``initial_transform``.

    Returns
    -------
    dict
        ``transform`` (path), ``rotation_deg`` (x, y, z of the best start), ``shift_mm``,
        ``score`` of the best start and ``score_identity`` (the header's own alignment, centre of
        mass aligned).
    """
    from tmstarget.preproc.headers import RAS_TO_LPS
    from scipy import ndimage

    f_data, f_aff = _low_resolution_arrays(fixed, resolution_mm)
    m_data, m_aff = _low_resolution_arrays(moving, resolution_mm)
    f_grid, m_grid = _search_grid(fixed, resolution_mm), _search_grid(moving, resolution_mm)
    if fixed_mask is not None:
        f_mask = to_grid(fixed_mask, f_grid, "nearestNeighbor").numpy() > 0.5
    else:
        f_mask = f_data > np.percentile(f_data, 60)
    if moving_mask is not None:
        com_moving = centre_of_mass_ras(to_grid(moving_mask, m_grid, "nearestNeighbor").numpy() > 0.5, m_aff)
    else:
        com_moving = centre_of_mass_ras(m_data, m_aff)
    com_fixed = centre_of_mass_ras(f_mask if fixed_mask is not None else f_data, f_aff)
    ijk_f = np.argwhere(f_mask).T.astype(np.float64)
    points_f = (f_aff[:3, :3] @ ijk_f + f_aff[:3, 3:4]).T          # fixed RAS mm, inside the mask
    f_values = f_data[f_mask].astype(np.float64)
    m_inv = np.linalg.inv(m_aff)
    superior = np.array([0.0, 0.0, 1.0])  # world (RAS) superior of the fixed image
    angles = np.arange(-arc_deg, arc_deg + 1e-6, step_deg)
    best = None
    identity_score = None
    rel = points_f - com_fixed
    for ax in angles:
        for ay in angles:
            for az in angles:
                rot = _rotation_xyz_deg((ax, ay, az))
                rotated = rel @ rot.T + com_moving
                for shift in shifts_mm:
                    pts = rotated + shift * superior
                    ijk_m = m_inv[:3, :3] @ pts.T + m_inv[:3, 3:4]
                    values = ndimage.map_coordinates(m_data, ijk_m, order=1, mode="constant", cval=0.0)
                    score = _score(f_values, values, metric)
                    if ax == 0 and ay == 0 and az == 0 and shift == 0:
                        identity_score = score
                    if best is None or score > best[0] + 1e-12:
                        best = (score, (ax, ay, az), shift)
    score, angles_best, shift = best
    rot = _rotation_xyz_deg(angles_best)
    matrix_ras = np.eye(4)                   # fixed RAS point -> moving RAS point
    matrix_ras[:3, :3] = rot
    matrix_ras[:3, 3] = com_moving + shift * superior - rot @ com_fixed
    matrix_lps = RAS_TO_LPS @ matrix_ras @ RAS_TO_LPS
    write_linear_transform_lps(matrix_lps, RAS_TO_LPS[:3, :3] @ com_fixed, out_mat)
    log.info("initial alignment search: rotation %s deg, shift %+g mm, %s %.3f (header + centre of mass: %.3f)",
             tuple(float(a) for a in angles_best), shift, metric, score,
             identity_score if identity_score is not None else float("nan"))
    return {"transform": str(out_mat), "rotation_deg": [float(a) for a in angles_best], "shift_mm": float(shift),
            "score": float(score), "score_identity": identity_score}


def _search_grid(image: "ants.ANTsImage", resolution_mm: float) -> "ants.ANTsImage":
    """The grid :func:`_low_resolution_arrays` returns values on."""
    if finest_spacing_mm(image) < 0.9 * resolution_mm:
        return ants.resample_image(image, (resolution_mm,) * 3, use_voxels=False, interp_type=0)
    return image


def affine_parameters_lps(transform_file: str) -> tuple[np.ndarray, np.ndarray]:
    """4x4 LPS matrix (fixed -> moving points) of an ITK linear transform file and its centre."""
    tx = ants.read_transform(transform_file)
    p = np.asarray(tx.parameters, dtype=float)
    centre = np.asarray(tx.fixed_parameters, dtype=float)
    m = p[:9].reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = m
    out[:3, 3] = p[9:12] + centre - m @ centre
    return out, centre


def write_linear_transform_lps(matrix_lps: np.ndarray, centre_lps: np.ndarray, out_mat: str | os.PathLike) -> str:
    """Write a 4x4 LPS map (fixed -> moving points) as an ITK AffineTransform about ``centre_lps``."""
    m = matrix_lps[:3, :3]
    translation = matrix_lps[:3, 3] - centre_lps + m @ centre_lps
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=m,
                                    translation=translation, center=centre_lps)
    ants.write_transform(tx, str(out_mat))
    return str(out_mat)
