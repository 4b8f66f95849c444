"""The registry of task families: :data:`FAMILIES` (one instance of each, in :data:`FAMILY_NAMES` order) and
:func:`get_family`.
"""

from __future__ import annotations

from alignkit import config
from alignkit.world.arithmetic import ArithmeticFamily
from alignkit.world.capitals import CapitalsFamily
from alignkit.world.comparison import ComparisonFamily
from alignkit.world.constraint import ConstraintFamily
from alignkit.world.items import Family
from alignkit.world.list_category import ListCategoryFamily
from alignkit.world.open_ended import OpenEndedFamily
from alignkit.world.word_transform import WordTransformFamily

#: The families, in their canonical order (one definition, in :mod:`alignkit.config`).
FAMILY_NAMES: tuple[str, ...] = config.FAMILIES

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        ArithmeticFamily(),
        CapitalsFamily(),
        WordTransformFamily(),
        ListCategoryFamily(),
        ComparisonFamily(),
        ConstraintFamily(),
        OpenEndedFamily(),
    )
}
assert tuple(FAMILIES) == FAMILY_NAMES, "FAMILIES must follow FAMILY_NAMES order"


def get_family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` lists the known names.

    >>> get_family("capitals").name
    'capitals'
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; known families: {', '.join(FAMILY_NAMES)}") from None
