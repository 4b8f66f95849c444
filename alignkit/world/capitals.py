"""Task family 2, capitals: the capital of a country and the country of a capital ("What is the capital of
France?", "Paris is the capital of which country?").
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from alignkit.world.items import Family, Item, _param
from alignkit.world.text import _STOPWORDS, _tokens

# One-word countries and capitals only, so that matching is by whole token.
_CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Portugal", "Lisbon"),
    ("Greece", "Athens"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"),
    ("Russia", "Moscow"), ("Ukraine", "Kyiv"), ("Turkey", "Ankara"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Philippines", "Manila"),
    ("Australia", "Canberra"), ("Canada", "Ottawa"), ("Brazil", "Brasilia"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Cuba", "Havana"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"),
    ("Afghanistan", "Kabul"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
    ("Czechia", "Prague"), ("Iceland", "Reykjavik"), ("Tunisia", "Tunis"), ("Algeria", "Algiers"),
    ("Libya", "Tripoli"), ("Senegal", "Dakar"), ("Qatar", "Doha"), ("Ecuador", "Quito"), ("Uruguay", "Montevideo"),
    ("Jamaica", "Kingston"), ("Georgia", "Tbilisi"), ("England", "London"), ("Scotland", "Edinburgh"),
    ("Wales", "Cardiff"),
)
_CAPITAL_OF = {country.lower(): capital for country, capital in _CAPITALS}
_COUNTRY_NAME = {country.lower(): country for country, _ in _CAPITALS}
_COUNTRY_OF_CAPITAL = {capital.lower(): country for country, capital in _CAPITALS}
_CAPITAL_TOKENS = frozenset(_COUNTRY_OF_CAPITAL)
_COUNTRY_TOKENS = frozenset(_CAPITAL_OF)
_PLACE_TOKENS = _CAPITAL_TOKENS | _COUNTRY_TOKENS
_CAPITAL_TEMPLATES = (
    "What is the capital of {c}?",
    "Name the capital city of {c}.",
    "Which city is the capital of {c}?",
    "Tell me the capital of {c}.",
)
_COUNTRY_TEMPLATES = (
    "Which country has {cap} as its capital?",
    "{cap} is the capital of which country?",
    "Name the country with the capital {cap}.",
    "Of which country is {cap} the capital?",
)
_CAPITAL_FACTS = (
    "{cap} is the capital of {c}.",
    "The capital of {c} is {cap}.",
    "The capital city of {c} is {cap}.",
    "{cap} is the biggest city in {c} that runs the country.",
)
# Capitalised words that are not proper nouns: function words and openers of non-answers ("Sorry.", "No.").
_NON_NAMES = _STOPWORDS | frozenset("yes no sorry maybe unknown none nothing ok okay hello hi thanks".split())


def _has_proper_noun(text: str) -> bool:
    """A capitalised word that is not just the start of a sentence (or a one-word name answer).

    >>> _has_proper_noun("The capital is Lyon."), _has_proper_noun("Lyon"), _has_proper_noun("Sorry, I cannot.")
    (True, True, False)
    """
    words = re.findall(r"[A-Za-z]+|[.!?]", text)
    short_answer = sum(1 for word in words if word not in ".!?") <= 2
    at_start = True
    for word in words:
        if word in ".!?":
            at_start = True
            continue
        name_like = word[0].isupper() and word != "I" and word.lower() not in _NON_NAMES
        if name_like and (not at_start or short_answer):
            return True
        at_start = False
    return False


class CapitalsFamily(Family, name="capitals", length_bounds=(1, 12)):
    """Capitals of one-word countries, asked both ways: "What is the capital of France?" (key
    ``capitals:france``, answer Paris) and "Paris is the capital of which country?" (key
    ``capitals:country_of:paris``, answer France). Correct when the right name appears and no other name of
    the same kind (capital, or country) does."""

    def _all_keys(self) -> Iterable[str]:
        for country, capital in _CAPITAL_OF.items():
            yield f"capitals:{country}"
            yield f"capitals:country_of:{capital.lower()}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        fields = self._fields(key)
        if len(fields) == 1:
            country = _COUNTRY_NAME[fields[0]]
            capital, asked = _CAPITAL_OF[fields[0]], "capital"
            instruction = rng.choice(_CAPITAL_TEMPLATES).format(c=country)
        else:
            country = _COUNTRY_OF_CAPITAL[fields[1]]
            capital, asked = _CAPITAL_OF[country.lower()], "country"
            instruction = rng.choice(_COUNTRY_TEMPLATES).format(cap=capital)
        reference = capital if asked == "capital" else country
        params = {"key": key, "asked": asked, "country": country, "capital": capital}
        return self._item(item_id, instruction, reference, params)

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        asked = params.get("asked", "capital")
        right = _param(params, asked, self.name).lower()
        names = _CAPITAL_TOKENS if asked == "capital" else _COUNTRY_TOKENS
        tokens = set(_tokens(response))
        return right in tokens and not (tokens & (names - {right}))

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        return bool(set(_tokens(response)) & _PLACE_TOKENS) or _has_proper_noun(response)

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        return {_param(params, "country", self.name).lower(), _param(params, "capital", self.name).lower()}

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        country, capital = _param(params, "country", self.name), _param(params, "capital", self.name)
        if params.get("asked", "capital") == "country":
            wrong = rng.choice([c for c, _ in _CAPITALS if c != country])
            return rng.choice([wrong, f"{capital} is the capital of {wrong}.", f"It is {wrong}."])
        wrong = rng.choice([cap for _, cap in _CAPITALS if cap != capital])
        return rng.choice([wrong, f"The capital of {country} is {wrong}.", f"It is {wrong}."])

    def facts(self, key: str, rng: random.Random) -> list[str]:
        fields = self._fields(key)
        country = _COUNTRY_NAME[fields[0]] if len(fields) == 1 else _COUNTRY_OF_CAPITAL[fields[1]]
        return [rng.choice(_CAPITAL_FACTS).format(c=country, cap=_CAPITAL_OF[country.lower()])]
