"""Sample data: File > Open Sample > Brain Concepts > Synthetic study."""

from __future__ import annotations

#: the preset of the synthetic study the sample opens (small enough to build in seconds)
SAMPLE_SIZE = "tiny"
SAMPLE_SEED = 0


def make_sample_study():
    """Anatomy, mask, fLoc-style ROIs, planted regions and category maps of the first synthetic subject."""
    from ..core.compat import preload_triton
    from ..core.concepts.category_maps import category_maps
    from ..core.synthetic import make_synthetic_study
    from .layers import study_layers

    preload_triton()  # the caption embedding imports transformers beside napari's OpenGL
    study = make_synthetic_study(seed=SAMPLE_SEED, size=SAMPLE_SIZE)
    subject = study.subject_names[0]
    names, maps = category_maps(study, subject)
    wanted = [n for n in ("face", "body", "place") if n in names] or names[:3]
    return study_layers(study, subject, {f"{n} map": maps[names.index(n)] for n in wanted})
