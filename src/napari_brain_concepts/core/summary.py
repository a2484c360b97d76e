"""The short text summary printed after an analysis (``brain-concepts demo`` / ``run`` / one verb)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .context import AnalysisContext
from .errors import InputError

#: rows of a table the summary prints; the rest is in its file
MAX_ROWS = 20


def _table(ctx: AnalysisContext, name: str) -> pd.DataFrame | None:
    try:
        return ctx.store.read_table(name)
    except (InputError, pd.errors.EmptyDataError):  # absent, or written empty (no test trials, say)
        return None


def _fmt(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _cut(df: pd.DataFrame, file: str, max_rows: int = MAX_ROWS) -> str:
    """``df`` formatted, its first ``max_rows`` rows, and a line saying how many more are in ``tables/FILE.tsv``."""
    more = f"\n… {len(df) - max_rows} more rows in tables/{file}.tsv" if len(df) > max_rows else ""
    return _fmt(df.head(max_rows)) + more


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
    if df is None or df.empty:
        return None
    if "dice_top_vs_planted" not in df or df["dice_top_vs_planted"].isna().all():  # nothing planted
        wide = df.pivot_table(index="concept", columns="map", values="peak", aggfunc="mean")
        wide.columns = [f"peak_{c}_map" for c in wide.columns]
        return ("Per-concept maps: the peak of each map (mean over subjects; corr: Pearson r, decoder: weight); "
                "the maps are in subjects/SUBJ/maps/\n" + _cut(wide.reset_index(), "concept_maps"))
    df = df.dropna(subset=["dice_top_vs_planted"])
    wide = df.pivot_table(index="concept", columns="map", values="dice_top_vs_planted", aggfunc="mean")
    wide.columns = [f"dice_{c}_map" for c in wide.columns]
    return ("Per-concept maps: Dice of the top voxels with the planted region (mean over subjects)\n"
            + _cut(wide.reset_index(), "concept_maps"))


def table_summary(ctx: AnalysisContext, name: str, title: str) -> str | None:
    df = _table(ctx, name)
    if df is None or df.empty:
        return None
    return f"{title}\n{_cut(df, name)}"


def _dice_by_subject(table: pd.DataFrame) -> pd.DataFrame:
    """Dice per planted concept (rows) and subject (columns), where the concept was planted, with the mean."""
    planted = table[table["planted_here"].astype(str).str.lower() == "true"]
    wide = planted.pivot_table(index="planted", columns="subject", values="dice", aggfunc="mean")
    wide["mean"] = wide.mean(axis=1)
    return wide.reset_index()


def basis_summary(ctx: AnalysisContext, shown: int = 10) -> str | None:
    """Without planted concepts to match: the basis's retrieval against the full space, and its first
    components with their names."""
    names = _table(ctx, "concept_names")
    if names is None or names.empty:
        return None
    ends = names.pivot_table(index="concept", columns="end", values="label", aggfunc="first", sort=False)
    ends = ends.reindex(columns=["positive", "negative"]).astype(object).fillna("").reset_index()  # an end with no name
    ends.columns = ["concept", "most", "least"]
    out = f"Concept basis: {len(ends)} component{'s' if len(ends) != 1 else ''}"
    retrieval = _table(ctx, "concept_retrieval")
    if retrieval is not None and not retrieval.empty:
        spaces = retrieval.groupby("space", sort=False)[["n_dims", "top1", "top1_chance"]].mean()
        out += "; top-1 retrieval of the test stimuli (mean over subjects): " + ", ".join(
            f"{space} ({int(row.n_dims)} dims) {row.top1:.3f}" for space, row in spaces.iterrows())
        out += f", chance {spaces['top1_chance'].iloc[0]:.3f}"
    return (f"{out}\nthe first {min(shown, len(ends))}, named by their captions' words\n"
            f"{_cut(ends, 'concept_names', shown)}")


def mask_scores_summary(ctx: AnalysisContext, shown: int = 10) -> str | None:
    """Without planted regions to compare with: how decodable each concept is and how many voxels its
    masks keep, for the most decodable concepts."""
    df = _table(ctx, "mask_scores")
    if df is None or df.empty:
        return None
    decodable = df["decodable"].astype(str).str.lower() == "true"
    per = df.assign(decodable=decodable).groupby("concept", sort=False).agg(
        decodability=("decodability", "mean"), participants=("decodable", "sum"),
        median_voxels=("n_voxels", "median"), hard_mask_r=("hard_mask_r", "mean"))
    per = per.sort_values("decodability", ascending=False).reset_index()
    per["median_voxels"] = per["median_voxels"].round().astype(int)
    per["participants"] = [f"{int(n)} of {df['subject'].nunique()}" for n in per["participants"]]
    return ("Voxel masks: the most decodable concepts (mean over subjects; participants: where the concept "
            "is decodable; hard_mask_r: r of the prediction through the hard mask)\n" + _cut(per, "mask_scores", shown))


def mask_summary(ctx: AnalysisContext) -> str | None:
    df = _table(ctx, "mask_truth")
    if df is None or "dice" not in df:
        return mask_scores_summary(ctx)
    out = "Voxel masks: Dice of each hard mask with the planted region\n" + _fmt(_dice_by_subject(df))
    if "concept_r" in df and "any_mask_r" in df:
        here = df["planted_here"].astype(str).str.lower() == "true"
        planted_r = df.loc[here, "concept_r"]
        absent_r = df.loc[~here, "any_mask_r"]
        out += "\neach concept read out through the masks (r with its planted feature): planted, own mask "
        out += (f"{planted_r.min():.2f} to {planted_r.max():.2f}" if planted_r.notna().any() else "none")
        if planted_r.isna().any():
            out += f" ({int(planted_r.isna().sum())} without a mask)"
        if (~here).any():
            decodes = df["decodes_concept"].astype(str).str.lower() == "true"
            out += (f"; not planted in a subject: {int((decodes & ~here).sum())} of {int((~here).sum())} read out "
                    f"through their own masks at the masks' threshold or above (the best of any mask there: "
                    + (f"{absent_r.max():.2f})" if absent_r.notna().any() else "no mask)"))
    direct = _table(ctx, "mask_truth_directions")
    if direct is not None and "dice" in direct:
        here = direct["planted_here"].astype(str).str.lower() == "true"
        wide = _dice_by_subject(direct)
        absent = direct[~here]
        masked = absent[absent["has_mask"].astype(str).str.lower() == "true"]
        out += ("\n\nThe same optimiser on each planted concept's own direction (apart from the basis)\n"
                + _fmt(wide)
                + f"\nconcepts not planted in a subject: {len(masked)} of {len(absent)} got a mask "
                  f"(decodability {absent['decodability'].min():.2f} to {absent['decodability'].max():.2f})")
    return out


def _state_table(ctx: AnalysisContext, key: str, title: str, file: str) -> str | None:
    entry = ctx.state.get(key)
    table = entry.get("summary") if isinstance(entry, dict) else None
    if not isinstance(table, pd.DataFrame) or table.empty:
        return None
    return f"{title}\n{_cut(table, file)}"


def _participants(study) -> str:
    """One clause per participant: sessions, trials and voxels (NSD: which sessions were read)."""
    from .io.nsd import number_ranges

    each = {}
    for name, sub in study.subjects.items():
        sessions = sub.session_numbers
        said = f" in sessions {number_ranges(sessions)}" if len(sessions) > 1 else ""
        each[name] = f"{sub.n_voxels:,} voxels, {len(sub.responses):,} trials{said}"
    if len(each) > 1 and len(set(each.values())) == 1:
        return f"Participants {', '.join(each)}: each {next(iter(each.values()))}"
    return "Participants: " + "; ".join(f"{name} ({text})" for name, text in each.items())


def format_summary(ctx: AnalysisContext) -> str:
    """Study, decoding, concept maps, masks, shared concepts, alignment and captions, as far as they ran."""
    study = ctx.study
    n_vox = [s.n_voxels for s in study.subjects.values()]
    n = len(study.subjects)
    voxels = f"{int(np.min(n_vox)):,}" + (f"–{int(np.max(n_vox)):,}" if np.min(n_vox) != np.max(n_vox) else "")
    test = study.stimuli.test
    tested = f" ({int(np.sum(test)):,} test)" if test is not None and np.any(test) else ""
    parts = [f"Study {study.name}: {n} participant{'s' if n != 1 else ''}, {len(study.stimuli):,} stimuli{tested}, "
             f"{voxels} voxels; steps: {', '.join(ctx.store.finished_steps) or 'none'}\n{_participants(study)}"]
    parts += [f"Left out step {name}: {reason}." for name, reason in ctx.state.get("skipped_steps", {}).items()]
    blocks = [
        decoding_summary(ctx),
        concept_map_summary(ctx),
        table_summary(ctx, "concept_truth", "Concept basis: the component that best matches each planted concept")
        or basis_summary(ctx),
        mask_summary(ctx),
        _state_table(ctx, "shared", "Shared concepts across participants, and localizer validation",
                     "shared_concepts"),
        table_summary(ctx, "rsa_summary", "RSA with each ROI (noise-ceiling-normalised r; FDR-significant marked)"),
        table_summary(ctx, "captions", "Caption reconstruction (rank of the true stimulus among test stimuli)"),
        table_summary(ctx, "encoding_summary", "Encoding models: held-out r in each ROI (and r / noise ceiling)"),
        _state_table(ctx, "image_models", "Image models vs the brain (RSA)", "image_models"),
    ]
    parts += [b for b in blocks if b]
    if "captions" in ctx.state:
        from .alignment.image_steps import caption_examples

        parts.append("Captions read out of the brain (first participant, five test stimuli)\n"
                     + caption_examples(ctx, n=5))
    return "\n\n".join(parts)
