"""Free-form phrasings of CausalLite10K causes that never state their effect (DESIGN 7, second pitfall).

A row's ``prompt`` narrates cause and effect ("A burst pipe causes water to gush out, flooding the
room"); most prompts have no comma, so a first clause would usually be the whole sentence. The phrasing
is the prompt cut before its effect: the comma clauses up to the first that names the cause, cut before
the first effect content word, trailing connectives dropped ("A burst pipe"). Where nothing of the
cause is left the row keeps its terse cause. Words are compared by a crude stem, so "crushing" matches
"crushed"; a synonym ("beaming" for "smile broadens") is not caught, which the comma cut mostly covers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_STOPWORDS = """
    a an the this that these those it its they them their he she him her his we you i my our your
    is are was were be been being am has have had do does did get gets got getting
    of to in on onto into at by for with from up down out off over under about through across along
    around after before while when as than then so and or but not no nor if which who whom what where
    there here very too also just all any some each other another such own same can will would should
    could may might must
"""
STOPWORDS = frozenset(_STOPWORDS.split())
# Words that link a cause to its effect; a phrasing cut before the effect does not end on them.
_CONNECTIVES = """
    cause causes causing caused trigger triggers triggering triggered create creates creating created
    make makes making made leave leaves leaving left send sends sending sent lead leads leading led
    result results resulting resulted set sets setting produce produces producing produced
    start starts starting started begin begins beginning
"""
CONNECTIVES = frozenset(_CONNECTIVES.split())
IRREGULAR = {
    "fell": "fall", "broke": "break", "broken": "break", "flew": "fly", "flown": "fly", "grew": "grow",
    "grown": "grow", "rose": "rise", "risen": "rise", "froze": "freeze", "frozen": "freeze",
    "shook": "shake", "shaken": "shake", "threw": "throw", "thrown": "throw", "blew": "blow",
    "blown": "blow", "tore": "tear", "torn": "tear", "felt": "feel", "sank": "sink", "sunk": "sink",
    "spun": "spin", "hung": "hang", "lost": "lose", "stuck": "stick",
}  # fmt: skip
WORD = re.compile(r"[A-Za-z0-9']+")
CLAUSE = re.compile(r"(?=,)|(?= and )")  # the boundaries kept, so the clauses join back into the prompt


def stem(word: str) -> str:
    """A crude stem, enough to match inflections: crushed / crushing -> crush, ripples / ripple -> rippl."""
    word = word.lower().removesuffix("'s").strip("'")
    word = IRREGULAR.get(word, word)
    if word[-3:] in ("ies", "ied") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in ("ness", "ful", "ing", "ed", "ly", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word


def _same(a: str, b: str) -> bool:
    """Equal stems, or long stems that differ in their last letter only (relieved / relief)."""
    if a == b:
        return True
    shortest = min(len(a), len(b))
    return shortest >= 5 and a[: shortest - 1] == b[: shortest - 1]


def content_stems(text: str) -> set[str]:
    """Stems of the words of ``text`` that are not stopwords."""
    return {stem(w) for w in WORD.findall(text) if w.lower() not in STOPWORDS}


def _mentions(words: Iterable[str], stems: set[str]) -> bool:
    return any(w.lower() not in STOPWORDS and any(_same(stem(w), s) for s in stems) for w in words)


def effect_stems(effect: str, cause: str | None = None) -> set[str]:
    """Content stems of the effect; with ``cause``, without those the terse cause shares (its subject:
    "vase drops" -> "vase intact" reveals only "intact")."""
    stems = content_stems(effect)
    if cause is None:
        return stems
    shared = content_stems(cause)
    return {s for s in stems if not any(_same(s, c) for c in shared)}


def free_phrasing(prompt: str, cause: str, effect: str) -> str:
    """The prompt's phrasing of the cause, cut before its effect; the terse cause when none is left."""
    clauses = CLAUSE.split(prompt)
    cause_stems = content_stems(cause)
    named = next((i for i, c in enumerate(clauses) if _mentions(WORD.findall(c), cause_stems)), 0)
    words = "".join(clauses[: named + 1]).split()
    leak = effect_stems(effect, cause)
    for i, word in enumerate(words):
        if _mentions(WORD.findall(word), leak):
            words = words[:i]
            break
    while words and (not WORD.search(words[-1]) or _is_linking(words[-1])):
        words = words[:-1]
    phrase = " ".join(words).strip(" ,;:")
    return phrase if _mentions(WORD.findall(phrase), cause_stems) else cause


def _is_linking(word: str) -> bool:
    token = "".join(WORD.findall(word)).lower()
    return token in STOPWORDS or token in CONNECTIVES


def leak_share(
    phrasings: Iterable[str], effects: Iterable[str], causes: Iterable[str] | None = None
) -> float:
    """Share of phrasings containing a content word of their effect (with ``causes``: one the terse
    cause does not share, see ``effect_stems``)."""
    phrasings, effects = list(phrasings), list(effects)
    causes = [None] * len(effects) if causes is None else list(causes)
    hits = [
        _mentions(WORD.findall(text), effect_stems(effect, cause))
        for text, effect, cause in zip(phrasings, effects, causes, strict=True)
    ]
    return sum(hits) / len(hits) if hits else 0.0
