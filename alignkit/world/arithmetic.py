"""Task family 1, arithmetic: add, subtract and multiply small numbers ("What is 7 plus 5?")."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from alignkit.world.items import Family, Item, _param
from alignkit.world.text import _response_numbers

# Operand ranges (inclusive). Results stay small (<= 100) so a tiny model can memorise the tables.
_ARITH_RANGES = {"add": (0, 12), "sub": (0, 12), "mul": (1, 10)}
_ARITH_WORD = {"add": "plus", "sub": "minus", "mul": "times"}
_ARITH_TEMPLATES = {
    "add": ("What is {a} plus {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?", "Calculate {a} plus {b}."),
    "sub": (
        "What is {a} minus {b}?", "Subtract {b} from {a}.", "What is {a} take away {b}?", "Calculate {a} minus {b}.",
    ),
    "mul": (
        "What is {a} times {b}?", "Multiply {a} by {b}.", "What is the product of {a} and {b}?",
        "What is {a} multiplied by {b}?",
    ),
}
_ARITH_FACTS = {
    "add": ("{a} plus {b} is {c}.", "{a} plus {b} equals {c}.", "The sum of {a} and {b} is {c}."),
    "sub": ("{a} minus {b} is {c}.", "{a} minus {b} equals {c}.", "If you take {b} away from {a} you get {c}."),
    "mul": ("{a} times {b} is {c}.", "{a} times {b} equals {c}.", "The product of {a} and {b} is {c}."),
}


def _arith(op: str, a: int, b: int) -> int:
    return a + b if op == "add" else a - b if op == "sub" else a * b


class ArithmeticFamily(Family, name="arithmetic", length_bounds=(1, 15)):
    """Add, subtract (non-negative results) and multiply small numbers. Commutative keys are sorted.

    Correct when the answer is the last number in the response and no number other than the operands and
    the answer appears ("7 plus 5 is 12." passes, "12 or 13" fails).
    """

    def _all_keys(self) -> Iterable[str]:
        for op, (low, high) in _ARITH_RANGES.items():
            for a in range(low, high + 1):
                for b in range(low, high + 1):
                    if (op == "sub" and a >= b) or (op != "sub" and a <= b):
                        yield f"arithmetic:{op}:{a}:{b}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        op, first, second = self._fields(key)
        a, b = int(first), int(second)
        if op != "sub" and rng.random() < 0.5:
            a, b = b, a
        instruction = rng.choice(_ARITH_TEMPLATES[op]).format(a=a, b=b)
        answer = _arith(op, a, b)
        params = {"key": key, "op": op, "a": a, "b": b, "answer": answer}
        return self._item(item_id, instruction, str(answer), params)

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        answer = _param(params, "answer", self.name)
        allowed = {_param(params, "a", self.name), _param(params, "b", self.name), answer}
        numbers = _response_numbers(response)
        return bool(numbers) and numbers[-1] == answer and set(numbers) <= allowed

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        """A number is given as the answer, not only the operands echoed back ("5 plus 7" names no result).

        >>> family, params = ArithmeticFamily(), {"a": 5, "b": 7, "answer": 12, "op": "add"}
        >>> [family.addresses(params, r) for r in ["12", "5 plus 7 is 13", "5 plus 7", "seven", "no idea"]]
        [True, True, False, True, False]
        """
        numbers = _response_numbers(response)
        operands = Counter([_param(params, "a", self.name), _param(params, "b", self.name)])
        echo = len(numbers) >= 2 and not Counter(numbers) - operands
        return bool(numbers) and not echo

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        op = _param(params, "op", self.name)
        numbers = {params["a"], params["b"], params["answer"]}
        return {str(n) for n in numbers} | {_ARITH_WORD[op]}

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        answer = _param(params, "answer", self.name)
        wrong = answer + rng.choice([d for d in (-2, -1, 1, 2, 3) if answer + d >= 0])
        a, b, op = params["a"], params["b"], params["op"]
        return rng.choice([str(wrong), f"The answer is {wrong}.", f"{a} {_ARITH_WORD[op]} {b} is {wrong}."])

    def facts(self, key: str, rng: random.Random) -> list[str]:
        op, first, second = self._fields(key)
        a, b = int(first), int(second)
        if op != "sub" and rng.random() < 0.5:
            a, b = b, a
        return [rng.choice(_ARITH_FACTS[op]).format(a=a, b=b, c=_arith(op, a, b))]
