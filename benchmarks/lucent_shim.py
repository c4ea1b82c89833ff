"""Import torch-lucent 0.1.8 with kornia 0.9: alias the two functions lucent imports from kornia's old top level."""

from __future__ import annotations


def import_lucent():
    """Return (render, param, objectives) from lucent.optvis after aliasing kornia's moved functions."""
    import kornia
    import kornia.geometry.transform as geometry

    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(geometry, name))
    from lucent.optvis import objectives, param, render

    return render, param, objectives
