"""Text folding for substring search over names and handles, across scripts.

A name is indexed in its folded form (case folded, accents removed, ё read as е) and, when it
differs, in its Latin transliteration (anyascii), so that `petr` finds «Пётр», «Пётр» finds
"Petr", and "jose" finds "José". A query is folded the same way and looked up in both forms.
"""

from __future__ import annotations

import unicodedata

from anyascii import anyascii

__all__ = ["fold", "search_forms"]

#: Letters that read as another in search: ё/Ё is written е in most Russian text.
_SAME_LETTER = str.maketrans({"ё": "е", "Ё": "Е"})
#: Marks transliteration adds for soft and hard signs ("Ol'ga"): people type "olga".
_DROPPED = str.maketrans({"'": None, "ʼ": None, "ʹ": None, "`": None})


def fold(text: str) -> str:
    """Case-folded, accent-free text with spaces collapsed; ё becomes е; scripts are kept."""
    text = unicodedata.normalize("NFKD", text.translate(_SAME_LETTER))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = unicodedata.normalize("NFC", text).casefold().translate(_DROPPED)
    return " ".join(text.split())


def search_forms(text: str) -> list[str]:
    """The forms `text` is indexed and searched under: folded, then its Latin reading if new."""
    folded = fold(text)
    latin = " ".join(anyascii(folded).lower().translate(_DROPPED).split())
    return [folded] if latin == folded or not latin else [folded, latin]
