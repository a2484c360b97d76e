"""Word-level and category controls for the caption embedding (Doerig et al.'s model comparison).

Each control keeps the sentence model and the stimuli but removes one thing captions carry:

- ``words_all``: mean of the embeddings of the caption's words, each embedded alone (no syntax, no context);
- ``words_nouns`` / ``words_verbs``: the same over nouns only / verbs only;
- ``captions_scrambled``: the captions with their word order shuffled (same words, broken syntax);
- ``category_sentence``: one sentence naming the stimulus' category labels ("dog frisbee person");
- ``categories_multihot``: a binary vector of the category labels (no language model at all).

Word-level controls are averaged over a stimulus' captions, as the caption embedding is.

Parts of speech come from the English lexicon that the ``lemminflect`` package ships (offline): a word's
possible universal POS tags. Words the lexicon lists as both noun and verb are resolved by their neighbours
(after a determiner, number or adjective: noun; after an auxiliary, "to", a pronoun, or a noun subject when
inflected as a verb: verb); an adjective after an auxiliary or "very" is no noun ("is red"), and the object
of a preposition is one ("on top of"). Auxiliaries (be, have, do, modals) are function words, not content
verbs. This is a lexicon tagger, not a statistical one: it is exact for the words the lexicon knows
unambiguously and deterministic everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import Progress

#: the word a stimulus without any noun (verb) in its captions gets in the nouns (verbs) control, as in
#: Doerig et al.'s code (get_nsd_noun/verb_embeddings_simple.py)
FALLBACK_WORDS = {"NOUN": "something", "VERB": "is"}

CONTROL_NAMES = ("words_all", "words_nouns", "words_verbs", "captions_scrambled", "category_sentence",
                 "categories_multihot")

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_DETERMINERS = frozenset(
    "a an the this that these those some many several each every his her its their our my your no another "
    "other any both all few".split())
_NUMBERS = frozenset("one two three four five six seven eight nine ten eleven twelve dozen".split())
_AUXILIARIES = frozenset(
    "be is are was were been being am 's 're have has had having do does did can could will would shall "
    "should may might must".split())
_PRONOUNS = frozenset("it he she they we i you".split())
_PREPOSITIONS = frozenset(
    "of in on at by for with from into onto over under above below between behind near beside through across "
    "along around against among".split())
_DEGREE = frozenset("very so too quite really rather".split())
_FUNCTION = frozenset(
    "and or but nor so yet to next besides up down off out about as than while who whom whose which what "
    "where when there here me him them us not very also".split()) | _PREPOSITIONS | _PRONOUNS | _DETERMINERS \
    | _AUXILIARIES


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and inner apostrophes; digits and punctuation dropped)."""
    return _WORD.findall(str(text).lower())


def _lemmas(word: str) -> dict[str, tuple[str, ...]]:
    try:
        from lemminflect import getAllLemmas
    except ImportError as err:
        raise InputError("part-of-speech lexicon", "the package lemminflect is not installed",
                         "pip install lemminflect (it ships the English lexicon offline)") from err
    return getAllLemmas(word)


def _lexicon(word: str) -> set[str]:
    return set(_lemmas(word))


def _nounlike(word: str) -> bool:
    cands = _lexicon(word)
    return not cands or bool(cands & {"NOUN", "PROPN"})


def _plural(word: str) -> bool:
    lemmas = _lemmas(word).get("NOUN", ())
    return bool(lemmas) and word not in lemmas


def pos_tags(words: Sequence[str]) -> list[str]:
    """Coarse part of speech of each word in a sentence: ``"NOUN"``, ``"VERB"`` or ``"OTHER"``.

    Parameters
    ----------
    words : sequence of str
        The words of one sentence, in order (see :func:`tokenize`).
    """
    tags: list[str] = []
    words = [w.lower() for w in words]
    for k, word in enumerate(words):
        prev = words[k - 1] if k > 0 else ""
        prev_tag = tags[-1] if tags else ""
        nxt = words[k + 1] if k + 1 < len(words) else ""
        if word in _FUNCTION or word in _NUMBERS:
            tags.append("OTHER")
            continue
        cands = _lexicon(word)
        noun = bool(cands & {"NOUN", "PROPN"})
        verb = "VERB" in cands
        if not cands:
            tags.append("VERB" if word.endswith(("ing", "ed")) and len(word) > 4 else "NOUN")
            continue
        if "ADJ" in cands and nxt and nxt not in _FUNCTION and _nounlike(nxt):
            tags.append("OTHER")                       # attributive adjective: "red car", "two dogs"
            continue
        if "ADJ" in cands and (prev in _DEGREE or prev in _AUXILIARIES and not (verb and word.endswith("ing"))):
            tags.append("OTHER")                       # predicative adjective: "is red", "very old" (not "is standing")
            continue
        if (verb and not noun and prev in _PREPOSITIONS and not word.endswith(("ing", "ed"))
                and not (nxt and nxt not in _FUNCTION and _nounlike(nxt))):
            tags.append("NOUN")                        # object of a preposition: "on top of" (not "with sliced ham")
            continue
        if noun and not verb:
            tags.append("NOUN")
            continue
        if verb and not noun:
            tags.append("VERB")
            continue
        if not (noun or verb):
            tags.append("OTHER")
            continue
        # noun/verb ambiguity: decide from the neighbours
        if prev in _DETERMINERS or prev in _NUMBERS or prev_tag == "OTHER" and prev not in _FUNCTION:
            tags.append("NOUN")
        elif prev in _AUXILIARIES or prev == "to" or prev in _PRONOUNS:
            tags.append("VERB")                        # "is eating", "to walk", "it runs"
        elif prev_tag == "NOUN" and (word.endswith(("ing", "ed")) or _plural(prev) != word.endswith("s")):
            tags.append("VERB")                        # subject-verb agreement: "man holds", "dogs play"
        elif word.endswith("ing") and not prev_tag:
            tags.append("VERB")
        else:
            tags.append("NOUN")
    return tags


def select_words(caption: str, pos: str | None = None) -> list[str]:
    """Words of ``caption``: all content-bearing words (``pos=None``), or only ``"NOUN"`` / ``"VERB"``."""
    words = tokenize(caption)
    if pos is None:
        return words
    if pos not in ("NOUN", "VERB"):
        raise InputError("parameter pos", f"{pos!r} is not a part of speech here", "use 'NOUN', 'VERB' or None")
    return [w for w, t in zip(words, pos_tags(words)) if t == pos]


def _check_captions(captions: Sequence[Sequence[str]], ids: Sequence[str] | None = None) -> None:
    from .text import _check_captions as check

    check(captions, ids)


def word_embeddings(captions: Sequence[Sequence[str]], encoder: Any, pos: str | None = None
                    ) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """Mean word embedding per stimulus (a generator yielding progress).

    Every distinct word is embedded once, alone, with ``encoder`` (a
    :class:`~napari_brain_concepts.core.embeddings.text.SentenceEncoder`); a caption is the mean of its
    selected words and a stimulus the mean of its captions. A caption without a selected word is skipped;
    a stimulus none of whose captions has one gets the embedding of a fixed word, :data:`FALLBACK_WORDS`
    ("something" for nouns, "is" for verbs, as in Doerig et al.'s code: the control then carries nothing of
    the stimulus), counted in the second return value so the caller can report it.

    Returns
    -------
    (ndarray (n_stimuli, d) float32, n_fallback)
    """
    _check_captions(captions)
    per_caption = [[select_words(c, pos) for c in caps] for caps in captions]
    fallback = 0
    for i, caps in enumerate(per_caption):
        if not any(caps):
            if not any(select_words(c) for c in captions[i]):
                raise InputError("stimuli captions", f"captions of stimulus {i + 1} contain no words",
                                 "give every stimulus a caption with words")
            fallback += 1
            per_caption[i] = [[FALLBACK_WORDS[pos]]]
    vocab = sorted({w for caps in per_caption for ws in caps for w in ws})
    table = yield from encoder.iter_encode(vocab, step=f"embed {(pos or 'all').lower()} words")
    table = np.asarray(table, dtype=np.float64)
    index = {w: k for k, w in enumerate(vocab)}
    out = np.zeros((len(captions), table.shape[1]))
    for i, caps in enumerate(per_caption):
        means = [table[[index[w] for w in ws]].mean(axis=0) for ws in caps if ws]
        out[i] = np.mean(means, axis=0)
    return out.astype(np.float32), fallback


def caption_mean(captions: Sequence[Sequence[str]], encoder: Any, step: str = "embed captions",
                 ids: Sequence[str] | None = None) -> Generator[Progress, None, np.ndarray]:
    """Mean over each stimulus' captions of their sentence embeddings (the caption model's definition).
    ``ids`` (the stimulus ids) name a stimulus without caption in the error."""
    _check_captions(captions, ids)
    unique = sorted({c for caps in captions for c in caps})
    vectors = yield from encoder.iter_encode(unique, step=step)
    row = {c: k for k, c in enumerate(unique)}
    return np.stack([np.asarray(vectors)[[row[c] for c in caps]].mean(axis=0) for caps in captions]
                    ).astype(np.float32)


def scrambled_captions(captions: Sequence[Sequence[str]], random_state: int | np.random.Generator | None = 0
                       ) -> list[list[str]]:
    """The captions with their words in a random order (seeded; every caption shuffled independently)."""
    _check_captions(captions)
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    out = []
    for caps in captions:
        row = []
        for c in caps:
            words = tokenize(c)
            row.append(" ".join(words[k] for k in rng.permutation(len(words))))
        out.append(row)
    return out


#: the category sentence of a stimulus without any category label, as in Doerig et al.'s code
NO_CATEGORY = "something"


def category_sentences(categories: Sequence[Sequence[str]]) -> list[str]:
    """One sentence per stimulus naming its category labels, e.g. ``"dog frisbee person"``.

    As in Doerig et al.'s code: the names joined by spaces (``_`` read as a space), and
    :data:`NO_CATEGORY` for a stimulus without a label. A study with no label at all is refused.
    """
    _check_some_categories(categories)
    out = []
    for cats in categories:
        names = [str(c).replace("_", " ").strip() for c in cats if str(c).strip()]
        out.append(" ".join(names) if names else NO_CATEGORY)
    return out


def _check_some_categories(categories: Sequence[Sequence[str]]) -> None:
    if not any(str(c).strip() for cats in categories for c in cats):
        raise InputError("stimuli categories", "no stimulus has category labels",
                         "add a categories column to stimuli.tsv, or leave out the category controls")


def multi_hot(categories: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """Binary category matrix (n_stimuli, n_categories) float32 and its column names (sorted); a stimulus
    without a label has a row of zeros."""
    _check_some_categories(categories)
    names = sorted({str(c).strip() for cats in categories for c in cats if str(c).strip()})
    col = {c: k for k, c in enumerate(names)}
    out = np.zeros((len(categories), len(names)), dtype=np.float32)
    for i, cats in enumerate(categories):
        for c in cats:
            if str(c).strip():
                out[i, col[str(c).strip()]] = 1.0
    return out, names


def control_embeddings(captions: Sequence[Sequence[str]], categories: Sequence[Sequence[str]], encoder: Any,
                       names: Sequence[str] = CONTROL_NAMES, random_state: int | np.random.Generator | None = 0,
                       ids: Sequence[str] | None = None,
                       ) -> Generator[Progress, None, dict[str, tuple[np.ndarray, str]]]:
    """Every control of ``names`` (see the module docstring) for the given stimuli (a generator).
    ``ids`` (the stimulus ids) name a stimulus without caption in the error.

    Returns
    -------
    {name: (values (n_stimuli, d) float32, note)}
        ``note`` says how the control was made (and how many stimuli fell back to :data:`FALLBACK_WORDS`).
    """
    unknown = sorted(set(names) - set(CONTROL_NAMES))
    if unknown:
        raise InputError("parameter controls", f"unknown controls {unknown}", f"use some of {', '.join(CONTROL_NAMES)}")
    if set(names) - {"category_sentence", "categories_multihot"}:  # the controls made from the captions
        _check_captions(captions, ids)
    out: dict[str, tuple[np.ndarray, str]] = {}
    pos_of = {"words_all": None, "words_nouns": "NOUN", "words_verbs": "VERB"}
    for name in names:
        if name in pos_of:
            values, fallback = yield from word_embeddings(captions, encoder, pos_of[name])
            note = f"mean of single-word embeddings ({(pos_of[name] or 'all words').lower()})"
            if fallback:
                note += f"; {fallback} stimuli had none and use the word {FALLBACK_WORDS[pos_of[name]]!r}"
            out[name] = (values, note)
        elif name == "captions_scrambled":
            values = yield from caption_mean(scrambled_captions(captions, random_state), encoder,
                                             step="embed scrambled captions")
            out[name] = (values, "caption-mean of captions with shuffled word order")
        elif name == "category_sentence":
            sentences = category_sentences(categories)
            values = yield from encoder.iter_encode(sentences, step="embed category sentences")
            note = "sentence embedding of the category names"
            unlabelled = sum(1 for sentence in sentences if sentence == NO_CATEGORY)
            if unlabelled:
                note += f"; {unlabelled} stimuli had no category label and use the word {NO_CATEGORY!r}"
            out[name] = (np.asarray(values, dtype=np.float32), note)
        else:
            values, columns = multi_hot(categories)
            unlabelled = int((values.sum(axis=1) == 0).sum())
            out[name] = (values, f"multi-hot over {len(columns)} categories"
                         + (f"; {unlabelled} stimuli had no category label (a row of zeros)" if unlabelled else ""))
    return out
