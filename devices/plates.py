"""Mainland Chinese licence plates: one canonical form for every path that accepts or compares one
(payload validation, exempt lists, permits, absences, the plate index, the API).

Gate and zone cameras send the same plate in several forms: with the separator dot after the
issuing-office letter (苏C·A1200), a space (苏C A1200), full-width letters and digits (苏Ｃ１２３４５),
lower case. ``canonical`` strips separators and spaces, folds full width to half width and upper-cases:
苏CA1200. ``is_plate`` accepts what a gate camera reads on the mainland:

- ordinary plates, 7 characters: province, office letter, 5 letters or digits (苏C12345)
- new-energy plates, 8: province, office letter, 6 (苏CD12345, 苏C12345F)
- plates with a one-character suffix, 7: learner 学, police 警, trailer 挂, consulate 领, Hong Kong 港,
  Macau 澳, test 试, super-sized 超 (苏C1234警)
- emergency-service plates, 8: province, office letter, 4 digits, 应急 (苏C1234应急)
"""

import re
import unicodedata

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
SUFFIXES = "学警挂领港澳试超"
# Separators cameras and people put into plates: middle dots, bullets, full stops, hyphens, spaces.
_SEPARATORS = re.compile(r"[\s·•・‧∙⋅．.\-_]+")
_PLATE = re.compile(
    rf"^[{PROVINCES}][A-Z](?:[A-Z0-9]{{5}}|[A-Z0-9]{{6}}|[A-Z0-9]{{4}}[{SUFFIXES}]|[0-9]{{4}}应急)$"
)
MAX_RAW = 32  # longer than any plate in any form: not one


def canonical(text: str) -> str:
    """The plate's canonical form (NFKC folds full width to half width)."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", text)).upper()


def is_plate(text: str) -> bool:
    """A canonical string in one of the mainland formats."""
    return _PLATE.fullmatch(text) is not None


def service_kind(plate: str) -> str | None:
    """'emergency' (应急) or 'police' (警) for a canonical plate of such a vehicle, else None."""
    if plate.endswith("应急"):
        return "emergency"
    if plate.endswith("警"):
        return "police"
    return None
