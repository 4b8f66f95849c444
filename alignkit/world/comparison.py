"""Task family 5, comparison: the larger or smaller of two numbers, the heavier or lighter of two things
("Which is heavier, a cat or a horse?").
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping
from typing import Any

from alignkit.world.items import Family, Item, _param
from alignkit.world.text import (
    _article,
    _capitalise,
    _plural,
    _response_numbers,
    _tokens,
)

_COMPARE_NUMBERS = range(1, 21)
# Rough weights in kilograms; only pairs at least _WEIGHT_RATIO apart are asked, so answers are unambiguous.
_WEIGHTS: dict[str, float] = {
    "ant": 5e-6, "feather": 1e-3, "pencil": 1e-2, "apple": 0.2, "rabbit": 2.0, "cat": 4.0, "bicycle": 12.0,
    "dog": 25.0, "horse": 500.0, "piano": 300.0, "car": 1500.0, "elephant": 5000.0, "whale": 100000.0,
    "mouse": 0.02, "chair": 7.0,
}
_WEIGHT_RATIO = 4.0
_COMPARE_TEMPLATES = {
    "larger": ("Which is larger, {x} or {y}?", "Which number is bigger, {x} or {y}?", "Which is greater: {x} or {y}?",
               "Of {x} and {y}, which is larger?"),
    "smaller": ("Which is smaller, {x} or {y}?", "Which number is less, {x} or {y}?", "Which is lower: {x} or {y}?",
                "Of {x} and {y}, which is smaller?"),
    "heavier": ("Which is heavier, {x} or {y}?", "Which weighs more, {x} or {y}?", "What is heavier: {x} or {y}?"),
    "lighter": ("Which is lighter, {x} or {y}?", "Which weighs less, {x} or {y}?", "What is lighter: {x} or {y}?"),
}
_COMPARE_FACTS = {
    "larger": ("{big} is larger than {small}.", "{big} is bigger than {small}.", "{big} is greater than {small}."),
    "smaller": ("{small} is smaller than {big}.", "{small} is less than {big}."),
    "heavier": ("{Big} is heavier than {small}.", "{Big} weighs more than {small}."),
    "lighter": ("{Small} is lighter than {big}.", "{Small} weighs less than {big}."),
}


def _entity_forms(entity: str) -> set[str]:
    return {entity, _plural(entity)}


class ComparisonFamily(Family, name="comparison", length_bounds=(1, 12)):
    """Larger/smaller of two numbers, heavier/lighter of two things. Correct when the right option appears and
    the other does not ("12 is larger than 7" names both and fails: the verifier cannot tell which is meant)."""

    def _all_keys(self) -> Iterable[str]:
        for relation in ("larger", "smaller"):
            for x, y in itertools.combinations(_COMPARE_NUMBERS, 2):
                yield f"comparison:{relation}:{x}:{y}"
        for relation in ("heavier", "lighter"):
            for x, y in itertools.combinations(sorted(_WEIGHTS), 2):
                heavy, light = max(_WEIGHTS[x], _WEIGHTS[y]), min(_WEIGHTS[x], _WEIGHTS[y])
                if heavy / light >= _WEIGHT_RATIO:
                    yield f"comparison:{relation}:{x}:{y}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        relation, first, second = self._fields(key)
        options: list[Any]
        if relation in ("larger", "smaller"):
            options = [int(first), int(second)]
            pick_max = relation == "larger"
            answer = max(options) if pick_max else min(options)
            shown = [str(option) for option in options]
        else:
            options = [first, second]
            pick_max = relation == "heavier"
            answer = (max if pick_max else min)(options, key=_WEIGHTS.__getitem__)
            shown = [_article(option) for option in options]
        order = [0, 1] if rng.random() < 0.5 else [1, 0]
        options = [options[i] for i in order]
        shown = [shown[i] for i in order]
        other = options[1] if options[0] == answer else options[0]
        instruction = rng.choice(_COMPARE_TEMPLATES[relation]).format(x=shown[0], y=shown[1])
        reference = str(answer) if isinstance(answer, int) else _capitalise(_article(answer)) + "."
        params = {"key": key, "relation": relation, "options": options, "answer": answer, "other": other}
        return self._item(item_id, instruction, reference, params)

    @staticmethod
    def _named(params: Mapping[str, Any], response: str) -> set[Any]:
        """Which of the two options the response names."""
        answer, other = params["answer"], params["other"]
        if isinstance(answer, int):
            return set(_response_numbers(response)) & {answer, other}
        tokens = set(_tokens(response))
        return {option for option in (answer, other) if tokens & _entity_forms(option)}

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        _param(params, "answer", self.name)
        _param(params, "other", self.name)
        return self._named(params, response) == {params["answer"]}

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        return bool(self._named(params, response))

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        words = set()
        for option in _param(params, "options", self.name):
            words |= {str(option)} if isinstance(option, int) else _entity_forms(option)
        return words

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        other = _param(params, "other", self.name)
        if isinstance(other, int):
            return rng.choice([str(other), f"{other} is {params['relation']}."])
        return rng.choice([_capitalise(_article(other)) + ".", f"The {other} is {params['relation']}."])

    def facts(self, key: str, rng: random.Random) -> list[str]:
        relation, first, second = self._fields(key)
        if relation in ("larger", "smaller"):
            big, small = sorted((int(first), int(second)), reverse=True)
            return [rng.choice(_COMPARE_FACTS[relation]).format(big=big, small=small)]
        big, small = sorted((first, second), key=_WEIGHTS.__getitem__, reverse=True)
        big_np, small_np = _article(big), _article(small)
        template = rng.choice(_COMPARE_FACTS[relation])
        return [template.format(big=big_np, small=small_np, Big=_capitalise(big_np), Small=_capitalise(small_np))]
