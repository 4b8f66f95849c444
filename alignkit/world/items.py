"""Items and the family interface: :class:`Item`, one instruction with its verifier parameters, and
:class:`Family`, what every task family provides (keys, instruction sampling, verifier, corpus facts).
"""

from __future__ import annotations

import abc
import copy
import functools
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Item:
    """One instruction of the world with its verifier parameters.

    ``params`` is JSON-serialisable and always holds ``"key"``, the semantic key of the task.

    >>> item = Item("x-1", "capitals", "What is the capital of Peru?", "Lima", {"key": "capitals:peru"})
    >>> Item.from_record(item.to_record()) == item
    True
    """

    id: str
    family: str
    instruction: str
    reference: str | None
    params: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.params["key"])

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "instruction": self.instruction,
            "reference": self.reference,
            "params": copy.deepcopy(self.params),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Item:
        """Build an item from :meth:`to_record` output; ``ValueError`` names the missing or mistyped field."""
        if not isinstance(record, Mapping):
            raise ValueError(f"an item record must be a JSON object, got {type(record).__name__}")
        expected: dict[str, tuple[type, ...]] = {
            "id": (str,), "family": (str,), "instruction": (str,), "reference": (str, type(None)), "params": (dict,),
        }
        missing = [name for name in expected if name not in record]
        if missing:
            raise ValueError(f"item record lacks field(s) {missing}; it has {sorted(record)}")
        for name, types in expected.items():
            if not isinstance(record[name], types):
                wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ValueError(f"item record field {name!r} must be {wanted}, got {type(record[name]).__name__}")
        if "key" not in record["params"]:
            raise ValueError(f"item record {record['id']!r}: params lack the field 'key'")
        return cls(
            id=record["id"],
            family=record["family"],
            instruction=record["instruction"],
            reference=record["reference"],
            params=copy.deepcopy(dict(record["params"])),
        )


class Family(abc.ABC):
    """A task family: its keys, instruction sampling, verifier and the facts it contributes to the corpus.

    A family names itself in its class statement, ``class CapitalsFamily(Family, name="capitals",
    length_bounds=(1, 12))``; a shared base such as the topic families' leaves both out.
    """

    name: str
    #: (min_words, max_words) of an appropriate response.
    length_bounds: tuple[int, int]

    def __init_subclass__(cls, name: str | None = None, length_bounds: tuple[int, int] | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if length_bounds is not None:
            cls.length_bounds = length_bounds

    @abc.abstractmethod
    def _all_keys(self) -> Iterable[str]:
        """Every semantic key, in any order (:meth:`keys` sorts and caches)."""

    @abc.abstractmethod
    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        """An item for ``key`` with a phrasing (and, where there is a choice, a reference) drawn from ``rng``."""

    @abc.abstractmethod
    def verify(self, params: Mapping[str, Any], response: str) -> bool | None:
        """Whether ``response`` correctly does the task; ``None`` where correctness does not apply."""

    @abc.abstractmethod
    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        """Whether ``response`` contains the kind of thing asked for, right or wrong."""

    @abc.abstractmethod
    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        """Lowercase words whose presence makes a response on topic."""

    @abc.abstractmethod
    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        """A fluent answer that :meth:`verify` rejects (for open-ended: a sentence about another topic)."""

    @abc.abstractmethod
    def facts(self, key: str, rng: random.Random) -> list[str]:
        """Declarative sentences stating what the task ``key`` is about, for the pretraining corpus."""

    def keys(self) -> list[str]:
        """Every semantic key of the family, sorted."""
        return list(self._key_tuple)

    @functools.cached_property
    def _key_tuple(self) -> tuple[str, ...]:
        return tuple(sorted(self._all_keys()))

    @functools.cached_property
    def _key_set(self) -> frozenset[str]:
        return frozenset(self._key_tuple)

    def _fields(self, key: str) -> list[str]:
        """The fields of a known key after the family prefix; ``ValueError`` for a key not in :meth:`keys`."""
        if key not in self._key_set:
            raise ValueError(
                f"unknown {self.name} key {key!r}; keys look like {self._key_tuple[0]!r} (see Family.keys())"
            )
        return key.split(":")[1:]

    def _item(self, item_id: str, instruction: str, reference: str | None, params: dict[str, Any]) -> Item:
        return Item(id=item_id, family=self.name, instruction=instruction, reference=reference, params=params)

    def __repr__(self) -> str:
        return f"<Family {self.name}: {len(self._key_tuple)} keys>"


def _param(params: Mapping[str, Any], name: str, family: str) -> Any:
    """``params[name]``; ``ValueError`` names the family and the fields ``params`` does have."""
    if name not in params:
        raise ValueError(f"{family} params lack the field {name!r}; got fields {sorted(params)}")
    return params[name]
