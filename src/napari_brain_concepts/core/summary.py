"""The short text summary printed after an analysis (``brain-concepts demo`` / ``run`` / one verb)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .context import AnalysisContext
from .errors import InputError


def _table(ctx: AnalysisContext, name: str) -> pd.DataFrame | None:
    try:
        return ctx.store.read_table(name)
    except InputError:
        return None


def _fmt(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def decoding_summary(ctx: AnalysisContext) -> str | None:
    df = _table(ctx, "decoding")
    if df is None:
        return None
    keep = df[df["metric"].isin(["top1", "top5", "mindeye_brain_to_stimulus", "pairwise"])]
    if keep.empty:
        keep = df
    wide = keep.groupby(["decoder", "metric"], sort=False).agg(value=("value", "mean"),
                                                                chance=("chance", "mean")).reset_index()
    return "Decoding (mean over subjects; test stimuli)\n" + _fmt(wide)


def concept_map_summary(ctx: AnalysisContext) -> str | None:
    df = _table(ctx, "concept_maps")
    if df is None or df["dice_top_vs_planted"].isna().all():
        return None
    df = df.dropna(subset=["dice_top_vs_planted"])
    wide = df.pivot_table(index="concept", columns="map", values="dice_top_vs_planted", aggfunc="mean")
    wide.columns = [f"dice_{c}_map" for c in wide.columns]
    return ("Per-concept maps: Dice of the top voxels with the planted region (mean over subjects)\n"
            + _fmt(wide.reset_index()))


def table_summary(ctx: AnalysisContext, name: str, title: str, max_rows: int = 20) -> str | None:
    df = _table(ctx, name)
    if df is None or df.empty:
        return None
    more = f"\n… {len(df) - max_rows} more rows in tables/{name}.tsv" if len(df) > max_rows else ""
    return f"{title}\n{_fmt(df.head(max_rows))}{more}"


def format_summary(ctx: AnalysisContext) -> str:
    """Study, decoding, concept maps and what later steps left as their summaries."""
    study = ctx.study
    n_vox = [s.n_voxels for s in study.subjects.values()]
    parts = [f"Study {study.name}: {len(study.subjects)} participants, {len(study.stimuli)} stimuli, "
             f"{int(np.min(n_vox))}–{int(np.max(n_vox))} voxels; steps: "
             f"{', '.join(ctx.store.finished_steps) or 'none'}"]
    for block in (decoding_summary(ctx), concept_map_summary(ctx)):
        if block:
            parts.append(block)
    for text in ctx.state.get("summaries", {}).values():
        parts.append(text)
    return "\n\n".join(parts)
