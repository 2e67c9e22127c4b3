"""Plate misreads: a read one edit away from a known plate (province character included) is that plate.

Gate cameras misread a character now and then (8 for B, 0 for D, the province character itself on a
dirty plate). Candidates are found with the symmetric-delete trick: every plate is indexed under
each of its one-character deletions, so a lookup costs a handful of dictionary probes however many
plates the estate knows.
"""

from collections import defaultdict


def within_one_edit(a: str, b: str) -> bool:
    """True when one substitution, insertion or deletion turns ``a`` into ``b`` (or they are equal)."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def _deletions(plate: str) -> set[str]:
    return {plate[:i] + plate[i + 1 :] for i in range(len(plate))}


class PlateIndex:
    def __init__(self) -> None:
        self._keys: dict[str, set[str]] = defaultdict(set)
        self.known: set[str] = set()

    def add(self, plate: str) -> None:
        if plate in self.known:
            return
        self.known.add(plate)
        for key in _deletions(plate) | {plate}:
            self._keys[key].add(plate)

    def near(self, plate: str) -> list[str]:
        """Known plates one edit from ``plate`` (not ``plate`` itself), sorted."""
        found: set[str] = set()
        for key in _deletions(plate) | {plate}:
            found |= self._keys.get(key, set())
        found.discard(plate)
        return sorted(p for p in found if within_one_edit(p, plate))
