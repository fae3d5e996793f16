"""Guests' names (docs/CHAT.md, "Guest names"), and the room's roster of
signed-in names that guests may not take.

A guest's name is refused when it holds a character that changes how the
text around it is shown (control characters, bidirectional marks, ...), or
when nothing of it is visible. Two names are taken for the same when they
fold alike: NFKC, case folding, default-ignorable characters dropped
(``ALICE``, ``alice\\u200b`` and ``ａｌｉｃｅ`` are all ``alice``). Estuary's
own chat also folds UTS #39 confusables (a Cyrillic ``а``); Python's
standard library has no such table, so this example does not.
"""

from __future__ import annotations

import hashlib
import unicodedata

from django.core.cache import cache

MAX_USERNAME_CHARS = 50

# Characters no name may hold, besides the control characters (category Cc):
# bidirectional marks, embeddings, overrides and isolates; deprecated format
# characters; line and paragraph separators; the byte-order mark; interlinear
# annotations and the object replacement character.
_FORBIDDEN = (
    (0x061C, 0x061C),
    (0x200E, 0x200F),
    (0x202A, 0x202E),
    (0x2066, 0x2069),
    (0x206A, 0x206F),
    (0x2028, 0x2029),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFC),
)

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties),
# drawn as nothing: a name of only these and white space shows nothing.
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

BRAILLE_BLANK = "\u2800"


def _within(c: str, ranges) -> bool:
    code = ord(c)
    return any(low <= code <= high for low, high in ranges)


def forbidden_char(c: str) -> bool:
    """True for a character no name may hold."""
    return unicodedata.category(c) == "Cc" or _within(c, _FORBIDDEN)


def ignorable(c: str) -> bool:
    """True for a default-ignorable character (drawn as nothing)."""
    return _within(c, _IGNORABLE)


class NameProblem(ValueError):
    """Why a guest's name is refused: ``too_long`` or not (a forbidden or
    invisible name)."""

    def __init__(self, too_long: bool):
        super().__init__("over 50 characters" if too_long else "forbidden or invisible characters")
        self.too_long = too_long


def check(raw: str) -> str | None:
    """A guest's name, trimmed: ``None`` when empty (the guest is
    ``Anonymous``); raises :class:`NameProblem` when refused.

    >>> check("  alice "), check(""), check("Zoë")
    ('alice', None, 'Zoë')
    >>> check("\\u202eecila")
    Traceback (most recent call last):
    chat.names.NameProblem: forbidden or invisible characters
    >>> check("u" * 51)
    Traceback (most recent call last):
    chat.names.NameProblem: over 50 characters
    """
    name = raw.strip()
    if not name:
        return None
    if any(forbidden_char(c) for c in name):
        raise NameProblem(too_long=False)
    if len(name) > MAX_USERNAME_CHARS:
        raise NameProblem(too_long=True)
    if all(c.isspace() or ignorable(c) or c == BRAILLE_BLANK for c in name):
        raise NameProblem(too_long=False)
    return name


def fold(name: str) -> str:
    """The key under which names that look alike are equal.

    >>> fold("ALICE") == fold("alice\\u200b") == fold("\\uff41\\uff4c\\uff49\\uff43\\uff45") == "alice"
    True
    """
    folded = unicodedata.normalize("NFKC", name.strip()).casefold()
    return unicodedata.normalize("NFKC", "".join(c for c in folded if not ignorable(c)))


# The roster: per room and folded name, how many of the signed-in member's
# connections are in the room, in the cache every worker process shares. A
# count lapses a day after its member's last sign-in (a worker that died
# before counting down leaves no name taken for ever).
ROSTER_TTL = 24 * 3600


def _key(room: str, name: str) -> str:
    return "chat:signed-in:" + hashlib.sha256(f"{room}\n{fold(name)}".encode()).hexdigest()


async def sign_in(room: str, name: str) -> None:
    """A signed-in member's connection joined ``room``."""
    key = _key(room, name)
    await cache.aadd(key, 0, timeout=ROSTER_TTL)
    await cache.aincr(key)
    await cache.atouch(key, ROSTER_TTL)


async def sign_out(room: str, name: str) -> None:
    """A signed-in member's connection left ``room``."""
    try:
        await cache.adecr(_key(room, name))
    except ValueError:
        pass  # the cache lost the key: nothing to count down


async def taken(room: str, name: str) -> bool:
    """True when ``name`` looks like the name of a member signed in in ``room``."""
    return (await cache.aget(_key(room, name), 0)) > 0
