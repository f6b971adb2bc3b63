"""An interactive, offline slice viewer of the subject's T1w with the target, the scalp entry and the seed map.

Component: :func:`nilearn.plotting.view_img` (brainsprite.js and jQuery, inlined by nilearn itself),
because it is already a dependency, loads nothing from the network and its scripts are 0.1 MB; NiiVue
would add a multi-megabyte JavaScript bundle and a second imaging library. Size, measured on the
ds000240 sub-01 T1w: nilearn's own page at 1 mm is 6.4 MB; cropped to the head, with the air set to 0,
the background sprite as 8-bit grey and the overlay as a palette PNG it is 2.7 MB, and the 2.5 MB
budget makes it 1.1 mm and 2.2 MB (the whole report 4.0 MB); the demo's reports are 4.3 and 4.5 MB.

brainsprite draws one overlay and one cursor, so the two points are painted into that overlay as small balls with
colours of their own (target yellow, scalp entry cyan) beside the thresholded seed map (RdBu_r, as in
the static seed-map figure).

The viewer is a complete HTML document; the page embeds it in a sandboxed ``<iframe srcdoc>`` and
allows exactly its inline scripts by their SHA-256 in the page's Content-Security-Policy
(:func:`viewer_script_hashes`); every image is a ``data:`` URI. brainsprite prints the cursor's
coordinates, so the page leaves the viewer out on a FAILed unit. The section's ``<details>`` is open
from the start: brainsprite sizes its canvas from the frame's width when the frame loads, and a frame
inside a folded ``<details>`` may have none then.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.qc.text import point, scrub_paths
from tmstarget.report.common import DISPLAY_VOXEL_MM, Unavailable, head_grid, resample_to_grid

log = logging.getLogger(__name__)

#: Voxel size (mm) of the viewer's grid: the T1w is resampled to it (a 0.7 mm T1w would not fit in 5 MB); the
#: static T1w figures' grid, so the viewer reuses their resampled images.
VIEWER_VOXEL_MM = DISPLAY_VOXEL_MM
#: Largest viewer document (bytes); above it the grid is coarsened so the whole report stays < 5 MB.
MAX_VIEWER_BYTES = 2_500_000
#: Width (CSS px) of the viewer (the page's column); its height follows the head's proportions.
VIEWER_WIDTH_PX = 1050
#: Radii (mm) of the balls painted at the target and at the scalp entry.
TARGET_BALL_MM = 4.0
ENTRY_BALL_MM = 5.0
#: Seed-map voxels with |z| below this fraction of the colour limit are transparent (anatomy shows).
SEED_MAP_SHOWN_FRACTION = 0.25
#: Colour steps of the seed map in the viewer (the static figure shows the continuous scale).
SEED_MAP_LEVELS = 21
#: Colours of the two points in the overlay (the static target figure uses the same yellow and cyan).
TARGET_RGB, ENTRY_RGB = (1.0, 0.85, 0.0), (0.0, 1.0, 1.0)

# Overlay values: the seed map is mapped to [1, 1.99], the target ball is 2.5, the entry ball 3.5; the
# colour map is RdBu_r on [1, 2), yellow on [2, 3), cyan on [3, 4]; 0 is transparent.
_SEED_LO, _SEED_HI, _TARGET_VALUE, _ENTRY_VALUE, _TOP = 1.0, 1.99, 2.5, 3.5, 4.0


def _load_3d(path, what: str) -> nib.Nifti1Image:
    """Data and affine of a 3D image (first volume of a 4D one); no header text is read."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise ValueError(f"{what} {Path(str(path)).name} is not a readable NIfTI image "
                         f"({type(exc).__name__}); rerun the step that writes it") from None
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{what} has {data.ndim} dimensions; the viewer needs a 3D image")
    return nib.Nifti1Image(np.nan_to_num(data), img.affine)


def _head_only(data: np.ndarray) -> np.ndarray:
    """The T1w with the air around the head set to 0 (drawn black, and it compresses to nothing)."""
    from scipy import ndimage

    head = data > 0.1 * np.percentile(data, 99)
    head = ndimage.binary_fill_holes(ndimage.binary_closing(head, iterations=3))
    labels, n = ndimage.label(head)
    if n > 1:
        head = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return np.where(head, data, 0.0)


def _ball(affine: np.ndarray, shape, centre_ras_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Boolean mask of the grid voxels whose centres lie within ``radius_mm`` of ``centre_ras_mm``."""
    centre_ijk = nib.affines.apply_affine(np.linalg.inv(affine), centre_ras_mm)
    reach = int(np.ceil(radius_mm / np.min(np.abs(np.diag(affine)[:3])))) + 1
    lo = np.clip(np.floor(centre_ijk).astype(int) - reach, 0, shape)
    hi = np.clip(np.floor(centre_ijk).astype(int) + reach + 2, 0, shape)
    ijk = np.indices(hi - lo).reshape(3, -1).T + lo
    dist_mm = np.linalg.norm(nib.affines.apply_affine(affine, ijk) - centre_ras_mm, axis=1)
    out = np.zeros(shape, dtype=bool)
    inside = ijk[dist_mm <= radius_mm]
    out[inside[:, 0], inside[:, 1], inside[:, 2]] = True
    return out


def _overlay(z_grid: np.ndarray | None, affine: np.ndarray, shape, target_t1w_ras_mm: np.ndarray,
             entry_t1w_ras_mm: np.ndarray | None) -> np.ndarray:
    """The overlay volume: thresholded seed map in [1, 1.99], target ball 2.5, entry ball 3.5, else 0."""
    out = np.zeros(shape, dtype=np.float32)
    if z_grid is not None:
        from tmstarget.report.figures import seed_map_vmax

        vmax = seed_map_vmax(z_grid, None)
        shown = np.abs(z_grid) >= SEED_MAP_SHOWN_FRACTION * vmax
        # SEED_MAP_LEVELS colour steps: few colours compress well and fit a palette PNG (_palette_png)
        step = np.round((np.clip(z_grid[shown], -vmax, vmax) + vmax) / (2 * vmax) * (SEED_MAP_LEVELS - 1))
        out[shown] = _SEED_LO + step / (SEED_MAP_LEVELS - 1) * (_SEED_HI - _SEED_LO)
    out[_ball(affine, shape, target_t1w_ras_mm, TARGET_BALL_MM)] = _TARGET_VALUE
    if entry_t1w_ras_mm is not None:
        out[_ball(affine, shape, entry_t1w_ras_mm, ENTRY_BALL_MM)] = _ENTRY_VALUE
    return out


def _overlay_cmap():
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    seed = colormaps["RdBu_r"](np.linspace(0, 1, 256))
    band = np.ones((256, 4))
    return ListedColormap(np.vstack([seed, band * (*TARGET_RGB, 1), band * (*ENTRY_RGB, 1)]), name="tmstarget_viewer")


def _replace_sprite(doc: str, img_id: str, recode) -> str:
    """``doc`` with the base64 PNG of ``<img id=img_id>`` replaced by ``recode(PIL image)`` (PNG bytes)."""
    from PIL import Image

    m = re.search(rf'(id="{img_id}"[^>]*?src="data:image/png;base64,)([A-Za-z0-9+/=]+)', doc)
    if m is None:
        return doc
    png = recode(Image.open(io.BytesIO(base64.b64decode(m.group(2)))))
    return doc[:m.start(2)] + base64.b64encode(png).decode("ascii") + doc[m.end(2):]


def _grey_png(img) -> bytes:
    """The background sprite as 8-bit grey (nilearn writes RGBA with R = G = B: 4x the data)."""
    out = io.BytesIO()
    img.convert("L").save(out, "PNG", optimize=True)
    return out.getvalue()


def _palette_png(img) -> bytes:
    """The overlay sprite with a palette when that is exact (it has few colours: about half the bytes)."""
    out = io.BytesIO()
    colours = img.getcolors(256)
    if colours is not None:
        from PIL import Image

        pal = img.quantize(colors=len(colours), method=Image.Quantize.FASTOCTREE)
        if np.array_equal(np.asarray(pal.convert("RGBA")), np.asarray(img.convert("RGBA"))):
            pal.save(out, "PNG", optimize=True)
            return out.getvalue()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


def _viewer_document(t1w_grid: nib.Nifti1Image, z_grid: nib.Nifti1Image | None, target: np.ndarray,
                     entry: np.ndarray | None, voxel_mm: float) -> str:
    """The viewer of images already on its grid (:func:`tmstarget.report.common.head_grid`, ``voxel_mm``)."""
    from nilearn import plotting

    affine, shape = t1w_grid.affine, t1w_grid.shape
    bg = nib.Nifti1Image(_head_only(np.asarray(t1w_grid.dataobj, dtype=np.float32)), affine)
    z_data = None if z_grid is None else np.asarray(z_grid.dataobj, dtype=np.float32)
    overlay = nib.Nifti1Image(_overlay(z_data, affine, shape, target, entry), affine)
    # both images are on one axis-aligned grid already: nilearn resamples nothing (nearest is exact there)
    view = plotting.view_img(overlay, bg_img=bg, cut_coords=tuple(float(v) for v in target), colorbar=False,
                             threshold=0.5, cmap=_overlay_cmap(), symmetric_cmap=False, vmin=_SEED_LO, vmax=_TOP,
                             black_bg=True, dim=0, opacity=1.0, resampling_interpolation="nearest",
                             title=f"T1w, {voxel_mm:.1f} mm", width_view=VIEWER_WIDTH_PX)
    return _replace_sprite(_replace_sprite(view.get_standalone(), "spriteImg", _grey_png), "overlayImg", _palette_png)


def _viewer_within_budget(on_grid, has_seedmap: bool, target: np.ndarray, entry: np.ndarray | None,
                          voxel_mm: float, max_bytes: int) -> str:
    """The viewer document at ``voxel_mm``, coarsened while it is over ``max_bytes``; ``on_grid(key, voxel_mm)``
    gives the T1w (``"t1w"``) or the seed map (``"fisherz_map_t1w"``) on the viewer's grid of that voxel size."""
    def document(v):
        return _viewer_document(on_grid("t1w", v), on_grid("fisherz_map_t1w", v) if has_seedmap else None,
                                target, entry, v)

    doc = document(voxel_mm)
    for _ in range(2):
        if len(doc) <= max_bytes:
            break
        # the images scale about with the number of voxels, the scripts (about 0.1 MB) do not
        image_bytes = sum(len(b) for b in re.findall(r"base64,([A-Za-z0-9+/=]+)", doc))
        image_budget = max(max_bytes - (len(doc) - image_bytes), image_bytes // 27)
        coarser_mm = float(np.ceil(voxel_mm * (image_bytes / image_budget) ** (1 / 3) * 10) / 10)
        log.info("viewer at %.1f mm is %.1f MB; coarsening to %.1f mm", voxel_mm, len(doc) / 1e6, coarser_mm)
        voxel_mm = max(coarser_mm, voxel_mm + 0.1)
        doc = document(voxel_mm)
    return doc


def interactive_viewer_html(t1w_path, seedmap_t1w_path, target_t1w_ras_mm, entry_t1w_ras_mm=None,
                            voxel_mm: float = VIEWER_VOXEL_MM, max_bytes: int = MAX_VIEWER_BYTES) -> str:
    """A self-contained HTML document: orthogonal slices of the T1w the clinician can click through.

    Parameters
    ----------
    t1w_path : path
        The subject's T1w (native space; any voxel size and orientation).
    seedmap_t1w_path : path or None
        The sgACC seed map (Fisher z) resampled to the T1w's space; None shows the points only.
    target_t1w_ras_mm, entry_t1w_ras_mm : array-like, shape (3,)
        Cortical target and scalp entry in T1w RAS mm (the native JSON); the entry may be None.
    voxel_mm : float
        Voxel size of the viewer's grid (the T1w is resampled to it, cropped to the head).
    max_bytes : int
        If the document is larger, the grid is coarsened by the cube root of its images' excess
        (at most twice, each at most 3x).

    Returns
    -------
    str
        A full HTML document (inline scripts, ``data:`` images only) that opens with the cursor on
        the target and prints the cursor's T1w RAS coordinates (mm).
    """
    target = point(target_t1w_ras_mm)
    if target is None:
        raise ValueError("the viewer needs the target in T1w RAS mm (native JSON target_t1w_ras_mm)")
    entry = point(entry_t1w_ras_mm)
    images = {"t1w": _load_3d(t1w_path, "T1w")}
    if seedmap_t1w_path is not None:
        images["fisherz_map_t1w"] = _load_3d(seedmap_t1w_path, "seed map in T1w space")
    points = [target] + ([entry] if entry is not None else [])
    grids: dict = {}

    def on_grid(key, v):
        if v not in grids:
            grids[v] = head_grid(images["t1w"], v, points)
        return resample_to_grid(images[key], *grids[v])

    return _viewer_within_budget(on_grid, "fisherz_map_t1w" in images, target, entry, voxel_mm, max_bytes)


def viewer_script_hashes(doc: str) -> list[str]:
    """CSP sources (``'sha256-...'``) of the inline scripts of a viewer document, to allow exactly them."""
    return [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode('utf-8')).digest()).decode('ascii')}'"
            for s in re.findall(r"<script>(.*?)</script>", doc, flags=re.DOTALL)]


def _viewer_height_px(doc: str) -> int:
    """Height (px) nilearn's layout needs at :data:`VIEWER_WIDTH_PX`: three slices side by side plus 20 %."""
    m = re.search(r'"nbSlice": \{"X": (\d+), "Y": (\d+), "Z": (\d+)\}', doc)
    if m is None:
        return int(0.5 * VIEWER_WIDTH_PX)
    nx, ny, nz = (int(v) for v in m.groups())
    return int(np.ceil(1.2 * max(ny, nz) / (ny + 2 * nx) * VIEWER_WIDTH_PX)) + 16


def viewer_view(ctx) -> dict:
    """The page's view of the viewer section: the escaped document and its CSP script hashes, or a note.

    On a FAILed unit the viewer is left out entirely (brainsprite prints the cursor's coordinates,
    and a FAILed unit shows no coordinate of the person outside a 'not usable' fold).
    """
    import html

    from markupsafe import Markup

    from tmstarget.report.verdict import unit_verdict

    if unit_verdict(ctx)["status"] == "fail":
        return {"note": "Not shown: the verdict is FAIL, so no coordinate of this person is shown here "
                        "(the viewer prints the cursor's coordinates)."}
    target, native = ctx.target_t1w(), ctx.native or {}
    t1w = ctx.path("t1w")
    if target is None or t1w is None:
        return {"note": "Not available: " + ("no T1w-space target (the native-space stage failed or did not run)"
                                             if target is None else "the preprocessed T1w is missing")}
    seedmap = ctx.path("fisherz_map_t1w")
    for key, what, path in (("t1w", "T1w", t1w), ("fisherz_map_t1w", "seed map in T1w space", seedmap)):
        if path is None:
            continue
        try:
            ctx.img(key)
        except Unavailable:
            return {"note": f"Not available: {what} {path.name} is not a readable NIfTI image; rerun the step that "
                            "writes it"}

    def on_grid(key, voxel_mm):
        # the T1w figures above drew the same images on the same grid (DISPLAY_VOXEL_MM): resampled once
        return ctx.on_t1w_grid(key, voxel_mm)

    try:
        doc = _viewer_within_budget(on_grid, seedmap is not None, target, point(native.get("entry_t1w_ras_mm")),
                                    VIEWER_VOXEL_MM, MAX_VIEWER_BYTES)
    except ValueError as exc:
        return {"note": f"Not available: {exc}"}
    except Exception as exc:  # the viewer is an extra: the static figures above stay
        log.warning("slice viewer failed: %s: %s", type(exc).__name__, scrub_paths(exc))
        return {"note": f"The slice viewer could not be drawn ({type(exc).__name__}: {scrub_paths(exc)})."}
    return {"srcdoc": Markup(html.escape(doc, quote=True)), "script_hashes": viewer_script_hashes(doc),
            "width": VIEWER_WIDTH_PX, "height": _viewer_height_px(doc), "seed_map": seedmap is not None,
            "mb": round(len(doc) / 1e6, 1)}
