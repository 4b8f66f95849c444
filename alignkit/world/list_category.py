"""Task family 4, list_category: name N members of a category ("List three animals.")."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from alignkit.world.items import Family, Item, _param
from alignkit.world.text import (
    _NUMBER_WORDS,
    _STOPWORDS,
    _WORD_FOR_NUMBER,
    _capitalise,
    _join_list,
    _plural,
    _singular,
    _tokens,
)

_CATEGORIES: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "horse", "cow", "pig", "sheep", "goat", "lion", "tiger", "bear", "wolf", "fox",
                "rabbit", "mouse", "deer", "monkey", "elephant"),
    "colors": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray"),
    "fruits": ("apple", "banana", "orange", "pear", "grape", "lemon", "cherry", "peach", "plum", "mango", "melon",
               "strawberry"),
    "vegetables": ("carrot", "potato", "onion", "pea", "bean", "cabbage", "lettuce", "tomato", "pepper",
                   "cucumber", "corn", "spinach"),
    "tools": ("hammer", "saw", "drill", "wrench", "shovel", "axe", "knife", "ruler", "ladder", "rake"),
    "body parts": ("arm", "leg", "hand", "foot", "head", "nose", "ear", "eye", "mouth", "knee", "finger", "neck"),
    "birds": ("eagle", "owl", "robin", "crow", "duck", "swan", "parrot", "pigeon", "sparrow", "penguin", "goose",
              "hawk"),
    "insects": ("ant", "bee", "fly", "moth", "beetle", "wasp", "butterfly", "ladybug", "grasshopper", "mosquito"),
    "vehicles": ("car", "bus", "train", "truck", "bicycle", "boat", "ship", "plane", "van", "tractor", "taxi"),
    "drinks": ("water", "milk", "tea", "coffee", "juice", "soda", "lemonade", "cocoa"),
    "clothes": ("shirt", "dress", "coat", "hat", "sock", "shoe", "skirt", "jacket", "scarf", "glove", "sweater"),
    "pieces of furniture": ("chair", "table", "bed", "sofa", "desk", "shelf", "stool", "bench", "cabinet", "wardrobe"),
    "musical instruments": ("piano", "guitar", "violin", "drum", "flute", "trumpet", "harp", "cello"),
    "sports": ("soccer", "tennis", "golf", "hockey", "baseball", "basketball", "swimming", "boxing", "rugby",
               "volleyball"),
    "shapes": ("circle", "square", "triangle", "rectangle", "oval", "star", "diamond", "hexagon", "pentagon"),
    "months": ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
               "november", "december"),
    "flowers": ("rose", "tulip", "daisy", "lily", "sunflower", "orchid", "daffodil", "violet"),
    "trees": ("oak", "pine", "maple", "birch", "willow", "elm", "cedar", "palm"),
    "jobs": ("teacher", "farmer", "baker", "driver", "cook", "artist", "doctor", "nurse", "pilot"),
    "desserts": ("cake", "pie", "candy", "chocolate", "cookie", "pudding", "muffin", "tart"),
    "metals": ("gold", "silver", "iron", "copper", "tin", "lead", "zinc", "nickel"),
}
_LIST_COUNTS = (2, 3, 4, 5)
_LIST_TEMPLATES = ("List {n} {c}.", "Name {n} {c}.", "Give me {n} {c}.", "Write a list of {n} {c}.")
_LIST_FACTS = ("Examples of {c} are {items}.", "{Items} are all {c}.", "Here are some {c}: {commas}.")
# Words a list answer may carry besides its members ("Three animals are cat, dog and horse.").
_LIST_FILLER = _STOPWORDS | frozenset(_NUMBER_WORDS) | frozenset(
    "and or are is some here examples example include such as like also few three".split()
)


def _category_key(category: str) -> str:
    return category.replace(" ", "_")


_CATEGORY_BY_KEY = {_category_key(category): category for category in _CATEGORIES}


def _member_forms(category: str) -> dict[str, str]:
    """Every accepted spelling (singular and plural) of a category's members -> the member."""
    forms = {}
    for member in _CATEGORIES[category]:
        forms[member] = member
        forms[_plural(member)] = member
    return forms


class ListCategoryFamily(Family, name="list_category", length_bounds=(2, 25)):
    """"List three animals." Correct when exactly N distinct category members appear and nothing else does
    (separators, articles, number words and the category name are allowed)."""

    def _all_keys(self) -> Iterable[str]:
        return (f"list_category:{_category_key(c)}:{n}" for c in _CATEGORIES for n in _LIST_COUNTS)

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        category_key, count = self._fields(key)
        category, n = _CATEGORY_BY_KEY[category_key], int(count)
        members = _CATEGORIES[category]
        instruction = rng.choice(_LIST_TEMPLATES).format(n=_WORD_FOR_NUMBER[n], c=category)
        reference = ", ".join(rng.sample(members, n))
        params = {"key": key, "category": category, "n": n, "members": sorted(members)}
        return self._item(item_id, instruction, reference, params)

    def _members_named(self, params: Mapping[str, Any], response: str) -> list[str] | None:
        """Members named in order, or ``None`` if a word is neither a member nor filler."""
        category = _param(params, "category", self.name)
        forms = {}
        for member in _param(params, "members", self.name):
            forms[member] = member
            forms[_plural(member)] = member
        filler = _LIST_FILLER | set(category.split()) | {_singular(word) for word in category.split()}
        named = []
        for token in _tokens(response):
            if token in forms:
                named.append(forms[token])
            elif token not in filler and not token.isdigit():
                return None
        return named

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        named = self._members_named(params, response)
        n = _param(params, "n", self.name)
        return named is not None and len(named) == n and len(set(named)) == n

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        parts = re.split(r",|;|\n|\band\b|\bor\b", response)
        return sum(1 for part in parts if re.search(r"[A-Za-z0-9]", part)) >= 2

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        category = _param(params, "category", self.name)
        members = _param(params, "members", self.name)
        return set(category.split()) | set(members) | {_plural(m) for m in members}

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        category, n = params["category"], params["n"]
        members = list(_param(params, "members", self.name))
        forms = _member_forms(category) if category in _CATEGORIES else {m: m for m in members}
        if rng.random() < 0.5:
            wrong_n = n + 1 if n < len(members) and (n == 2 or rng.random() < 0.5) else n - 1
            return ", ".join(rng.sample(members, wrong_n))
        outsiders = sorted(
            {m for members_ in _CATEGORIES.values() for m in members_ if m not in forms and _plural(m) not in forms}
        )
        items = rng.sample(members, n - 1) + [rng.choice(outsiders)]
        rng.shuffle(items)
        return ", ".join(items)

    def facts(self, key: str, rng: random.Random) -> list[str]:
        category_key, count = self._fields(key)
        category = _CATEGORY_BY_KEY[category_key]
        items = rng.sample(_CATEGORIES[category], int(count) + 1)
        template = rng.choice(_LIST_FACTS)
        joined = _join_list(items)
        return [template.format(c=category, items=joined, Items=_capitalise(joined), commas=", ".join(items))]
