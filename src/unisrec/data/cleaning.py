"""Item-text cleaning exactly as docs/protocol.md "Item text" describes (the authors' release rules).

Amazon: each of ``title``, ``category``, ``brand`` present in the meta record is cleaned on its own
(:func:`clean_field`) and the cleaned fields are joined with one space, giving
"title. category words. brand.". Online Retail: the lower-cased Description + ".".
"""

from __future__ import annotations

import html
import re

AMAZON_TEXT_FIELDS = ("title", "category", "brand")
MAX_FIELD_CHARS = 2000
_REMOVE_CHARS = ('"', "\n", "\r")
_HAS_WORD = re.compile(r"\w")


def clean_field(value: object, max_chars: int | None = MAX_FIELD_CHARS) -> str:
    """Clean one meta field (docs/protocol.md "Item text"; the release's ``clean_text``).

    A list (the 2018 ``category`` field) is joined with spaces, a dict is written as ``str(dict)``;
    then HTML entities are unescaped, ``"``, ``\\n`` and ``\\r`` removed, trailing dots collapsed to
    exactly one ``.`` (one is added if there is none). A field whose cleaned form (final dot
    included) reaches 2,000 characters becomes empty -- the release tests ``len >= 2000``, which we
    keep so texts match its files (``max_chars=None``: no limit). An empty field becomes ``"."``, as
    in the release.
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        try:
            text = " ".join(value)
        except TypeError:  # a list holding non-strings
            text = " ".join(str(v) for v in value)
    else:
        text = str(value)
    if "&" in text:  # html.unescape is the slow step; most fields have no entity
        text = html.unescape(text)
    for ch in _REMOVE_CHARS:  # str.replace beats a regex or str.translate on short fields
        if ch in text:
            text = text.replace(ch, "")
    text = text.rstrip(".") + "."
    # the release keeps a leading run of dots when the whole field is dots ("..." -> "..");
    # we collapse it to a single "." -- such a field carries no words either way.
    if max_chars is not None and len(text) >= max_chars:
        return ""
    return text


def amazon_item_text(record: dict, fields: tuple[str, ...] = AMAZON_TEXT_FIELDS,
                     max_chars: int | None = MAX_FIELD_CHARS) -> str:
    """Text of one Amazon meta record: the cleaned ``fields`` that are present, joined by spaces.

    The release appends a space after every field (so its texts end with ``" "``); we join instead,
    which a tokenizer cannot tell apart.
    """
    return " ".join(clean_field(record[key], max_chars) for key in fields if key in record and record[key] is not None)


def online_retail_text(description: str) -> str:
    """Online Retail item text: the Description stripped, lower-cased, plus ``"."`` (docs/protocol.md "Item text")."""
    return description.strip().lower() + "."


def is_empty_text(text: str) -> bool:
    """True if a text holds no word character (e.g. "" or ". ." from empty fields)."""
    return _HAS_WORD.search(text) is None
