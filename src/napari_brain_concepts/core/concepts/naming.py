"""Names for concept directions: the stimuli at both ends of a direction and the words of their captions.

Any set of unit directions in an embedding space can be named this way — the rows of a
:class:`~napari_brain_concepts.core.concepts.basis.ConceptBasis`, or the centroids of shared-concept
clusters. For each direction the stimuli are ranked by their embedding's projection on it; the
``n_show`` highest are its positive end, the ``n_show`` lowest its negative end ("what is the opposite
of a face?"). The label of each end is the lemmas that occur in the captions of most of its top
``n_words_from`` stimuli (stop words removed, lemmatised with simplemma, which ships its data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ..errors import InputError
from ..study import Stimuli

#: how a concept's words are ranked: by frequency among its top stimuli, or by excess over all stimuli
WORD_RANKINGS = ("frequency", "excess")

# Words that name concepts in scene captions (numbers, spatial relations) are kept even though generic
# English stop-word lists drop them.
_KEEP = frozenset({
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "above", "below", "behind", "beside", "between", "under", "over", "across", "front", "back", "top",
    "bottom", "side", "next", "left", "right", "near", "inside", "outside", "together", "empty", "full",
    "thick", "thin", "fire", "many", "few",
})


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words, less the number and relation words that name scene concepts."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) - _KEEP


@lru_cache(maxsize=65536)
def _lemma(token: str, lang: str) -> str:
    import simplemma

    return simplemma.lemmatize(token, lang=lang).lower()


def caption_lemmas(text: str, lang: str = "en") -> list[str]:
    """Lower-cased lemmas of the words (2+ letters) of ``text``, stop words removed."""
    import re

    stops = stop_words()
    out = []
    for token in re.findall(r"(?u)\b[^\W\d_][^\W\d_]+\b", text.lower()):
        if token in stops:
            continue
        lemma = _lemma(token, lang)
        if lemma and lemma not in stops and len(lemma) > 1:
            out.append(lemma)
    return out


@dataclass
class ConceptNames:
    """Names of K directions.

    ``table`` has one row per direction and end (``positive`` / ``negative``) with the label, the lemmas
    and their counts, and the ids and first captions of the shown stimuli; ``top`` and ``bottom`` hold
    the stimulus rows (K, n_show) of both ends, best first; ``scores`` the projections (n_stimuli, K).
    """

    concepts: list[str]
    table: pd.DataFrame
    top: np.ndarray
    bottom: np.ndarray
    scores: np.ndarray

    def words(self, concept: str, end: str = "positive") -> list[str]:
        row = self.table[(self.table["concept"] == concept) & (self.table["end"] == end)]
        if row.empty:
            raise InputError("concept names", f"no concept {concept!r} ({end} end)",
                             f"choose one of {', '.join(self.concepts)}")
        text = row["words"].iloc[0]
        return [] if not isinstance(text, str) or not text else text.split(";")

    def label(self, concept: str, end: str = "positive", n: int = 3) -> str:
        return ", ".join(self.words(concept, end)[:n])


def name_directions(directions: np.ndarray, embeddings: np.ndarray, stimuli: Stimuli,
                    concepts: Sequence[str] | None = None, *, rows: np.ndarray | None = None,
                    n_show: int = 8, n_words_from: int = 250, words_fraction: float = 0.1, n_words: int = 8,
                    max_df: float = 0.5, word_ranking: str = "frequency", lang: str = "en") -> ConceptNames:
    """Name each direction (K, d) by the stimuli and caption words at its two ends.

    Parameters
    ----------
    directions : (K, d)
        Directions in the embedding space (need not be unit length; only the ranking matters).
    embeddings : (n_stimuli, d)
        Embedding of every stimulus, rows in ``stimuli`` order.
    stimuli : Stimuli
        Ids and captions (and images, for contact sheets).
    concepts : list of str, optional
        Names of the directions (default ``c000``, ``c001``…).
    rows : array of int, optional
        Rank only these stimuli (e.g. the ones some subject saw); default all.
    n_show : int
        Stimuli listed (and shown on the contact sheet) per end.
    n_words_from : int
        The label counts words over this many top stimuli of each end (SDC: 250 of NSD's 73,000) …
    words_fraction : float
        … but over at most this share of the ranked stimuli, so that in a small study the label still
        describes the end of the axis rather than every stimulus.
    n_words : int
        Lemmas kept per end.
    max_df : float
        Lemmas found in the captions of more than this share of all ranked stimuli ("photo", "scene")
        name nothing and are left out.
    word_ranking : {"frequency", "excess"}
        ``"frequency"`` (SDC): the lemmas most frequent among the top stimuli. ``"excess"``: the lemmas whose
        count there most exceeds what as many stimuli drawn at random would hold (count − n × share of all
        ranked stimuli); a lemma found in many captions ("table", "bright" in the synthetic study)
        then names only the concepts whose top stimuli hold it more often than that, and a lemma no more
        frequent than chance is left out.
    lang : str
        Caption language for simplemma.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    D = np.asarray(directions, dtype=np.float32)
    E = np.asarray(embeddings, dtype=np.float32)
    if D.ndim == 1:
        D = D[None]
    if D.ndim != 2 or E.ndim != 2 or D.shape[1] != E.shape[1]:
        raise InputError("concept directions", f"have shape {D.shape}, embeddings {E.shape}",
                         "give (K, d) directions in the space of the (n_stimuli, d) embeddings")
    if E.shape[0] != len(stimuli):
        raise InputError("embeddings", f"have {E.shape[0]} rows for {len(stimuli)} stimuli",
                         "give one embedding row per stimulus")
    if word_ranking not in WORD_RANKINGS:
        raise InputError("parameter word_ranking", f"{word_ranking!r} is unknown", "use 'frequency' or 'excess'")
    K = D.shape[0]
    concepts = [f"c{k:03d}" for k in range(K)] if concepts is None else [str(c) for c in concepts]
    if len(concepts) != K:
        raise InputError("parameter concepts", f"{len(concepts)} names for {K} directions", "give one per direction")
    rows = np.arange(len(stimuli)) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise InputError("parameter rows", "selects no stimulus", "rank at least one stimulus")
    n_show = min(int(n_show), len(rows))
    n_from = max(1, min(int(n_words_from), int(np.ceil(words_fraction * len(rows)))))

    scores = E @ D.T  # (n_stimuli, K)
    docs = [" ".join(stimuli.captions[i]) for i in rows]
    vec = CountVectorizer(analyzer=lambda doc: caption_lemmas(doc, lang), binary=True)
    try:
        counts = vec.fit_transform(docs).tocsc()
        vocab = np.asarray(vec.get_feature_names_out())
    except ValueError:  # no caption words at all
        counts, vocab = None, np.asarray([], dtype=str)
    if counts is not None:
        share = np.asarray(counts.sum(0)).ravel() / len(rows)
        informative = share <= max_df

    table_rows = []
    top = np.zeros((K, n_show), dtype=np.int64)
    bottom = np.zeros((K, n_show), dtype=np.int64)
    for k, name in enumerate(concepts):
        order = np.argsort(-scores[rows, k], kind="stable")
        for end, ranked in (("positive", order), ("negative", order[::-1])):
            shown = rows[ranked[:n_show]]
            (top if end == "positive" else bottom)[k] = shown
            words, freq = [], []
            if counts is not None:
                c = np.asarray(counts[ranked[:n_from]].sum(0)).ravel()
                c = np.where(informative, c, 0)
                rank = c - n_from * share if word_ranking == "excess" else c
                # ties go to the rarer word over all stimuli (the more distinctive), then alphabetical
                pick = [j for j in np.lexsort((vocab, share, -rank))[:n_words] if c[j] > 0 and rank[j] > 0]
                words = [str(vocab[j]) for j in pick]
                freq = [int(c[j]) for j in pick]
            table_rows.append({
                "concept": name,
                "end": end,
                "label": ", ".join(words[:3]),
                "words": ";".join(words),
                "word_counts": ";".join(map(str, freq)),
                "n_counted": n_from,
                "stimulus_ids": ";".join(str(stimuli.ids[i]) for i in shown),
                "scores": ";".join(f"{scores[i, k]:.4g}" for i in shown),
                "captions": " | ".join(stimuli.captions[i][0] if stimuli.captions[i] else "" for i in shown),
            })
    return ConceptNames(concepts, pd.DataFrame(table_rows), top, bottom, scores)


def contact_sheet(names: ConceptNames, stimuli: Stimuli, concept: str, title: str | None = None,
                  thumb: int = 96):
    """A PIL image: the top stimuli of ``concept`` (first row) and of its negative end (second row).

    Each thumbnail carries the start of its first caption; stimuli without an image show the caption
    alone. Drawn with PIL (not matplotlib) so that a basis of 100+ concepts gets its sheets in seconds.
    """
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    if concept not in names.concepts:
        raise InputError("contact sheet", f"no concept {concept!r}", f"choose one of {', '.join(names.concepts)}")
    k = names.concepts.index(concept)
    n = names.top.shape[1]
    font = ImageFont.load_default(size=10)
    small = ImageFont.load_default(size=9)
    label_w, head, cap_h, pad = 110, 22, 30, 4
    cell_w, cell_h = thumb + pad, thumb + cap_h
    sheet = Image.new("RGB", (label_w + n * cell_w, head + 2 * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), title or f"{concept}: {names.label(concept)}   |   opposite: "
              f"{names.label(concept, 'negative')}", fill="black", font=font)
    for r, (end, shown) in enumerate((("positive", names.top[k]), ("negative", names.bottom[k]))):
        y0 = head + r * cell_h
        side = ("+ " if end == "positive" else "- ") + names.label(concept, end)  # PIL's font has no U+2212
        draw.multiline_text((pad, y0 + thumb // 3), "\n".join(textwrap.wrap(side, 16)[:4]), fill="black",
                            font=font)
        for j, i in enumerate(shown):
            x0 = label_w + j * cell_w
            caption = stimuli.captions[i][0] if stimuli.captions[i] else str(stimuli.ids[i])
            try:
                img = stimuli.image(int(i)).convert("RGB")
                img.thumbnail((thumb, thumb))
                sheet.paste(img, (x0, y0))
            except InputError:
                draw.rectangle([x0, y0, x0 + thumb, y0 + thumb], outline="grey")
                draw.multiline_text((x0 + 2, y0 + 2), "\n".join(textwrap.wrap(caption, 16)[:7]), fill="black",
                                    font=small)
            draw.multiline_text((x0, y0 + thumb + 1), "\n".join(textwrap.wrap(caption, 18)[:2]), fill="black",
                                font=small)
    return sheet


def write_names(store, names: ConceptNames, stimuli: Stimuli, table: str = "concept_names",
                sheets: Sequence[str] | None = None, prefix: str = "concept_") -> list:
    """Write the names TSV and a contact-sheet PNG per concept (``figures/{prefix}{concept}.png``)."""
    from ..io.atomic import write_atomic

    paths = [store.write_table(table, names.table)]
    for concept in names.concepts if sheets is None else sheets:
        sheet = contact_sheet(names, stimuli, concept)
        paths.append(write_atomic(store.figure_path(f"{prefix}{concept}"),
                                  lambda p, im=sheet: im.save(p, format="PNG")))
    return paths
