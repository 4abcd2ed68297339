"""What the demo's pt-BR screen must not show: English words, phone numbers in a second format."""

from __future__ import annotations

import re

#: English words the screen once showed (forecast line, notices, operation codes), as whole words.
#: Not auto_provision: also the setting's name (pool_config.auto_provision), which notices quote.
ENGLISH = (
    "forecast",
    "replacements",
    "recommended",
    "configured",
    "lead",
    "history",
    "purchases",
    "paused",
    "until",
    "nothing",
    "bought",
    "off",
    "not set",
    "resumed",
    "failure",
    "daily",
    "auto_replace",
    "promotion_warming_ready",
    "promotion_ready_active",
    "demotion",
    "migration",
    "cancel",
    "rehabilitation",
    "config_change",
)
#: Anything that looks like a Brazilian number, formatted or not.
PHONE_LIKE = re.compile(r"\+55(?:[ \-]?\d)+")
#: The one format (messages.phone): +55 11 91234-5678.
PHONE = re.compile(r"\+55 \d{2} \d{4,5}-\d{4}")


def english_words(text: str) -> list[str]:
    """The words of ENGLISH found in text (case-insensitive, whole words only)."""
    return [w for w in ENGLISH if re.search(rf"(?<![\w]){re.escape(w)}(?![\w])", text, re.I)]


def phones(text: str) -> list[str]:
    """Every phone-like run of characters in text."""
    return PHONE_LIKE.findall(text)


def phones_in_another_format(text: str) -> list[str]:
    """The phone numbers in text not written as messages.phone writes them."""
    return [p for p in phones(text) if not PHONE.fullmatch(p)]
