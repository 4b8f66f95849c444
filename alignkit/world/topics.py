"""Topics and sentences about them: :data:`TOPICS`, the sentence generator (:func:`topic_sentence`) that the
constraint and open-ended families and the corpus use, the complete-sentence check (:func:`is_complete_sentence`,
whose verbs include every topic's predicates) and :class:`_TopicFamily`, the base of the two topic families.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alignkit.world.items import Family, _param
from alignkit.world.text import _article, _capitalise, _mentions, _tokens, _word_count

# --------------------------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """A subject to write about: how to say it, what to say about it, and which words mark a text as on topic."""

    name: str  # key token, e.g. "moon"
    subject: str  # noun phrase used in sentences and instructions, e.g. "the moon"
    plural: bool
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]  # base-form predicates, e.g. "shine at night"
    words: frozenset[str]  # on-topic words: the subject noun and associated nouns


# One topic a row: subject (its last word names the topic) | it or they (singular or plural) | three adjectives |
# three predicates in base form, comma-separated | on-topic words besides the topic's name.
_TOPIC_TABLE = """
the moon    | it   | bright round pale | shine at night, rise over the hills, light the dark sky | night sky stars
the sun     | it   | hot bright yellow | rise in the morning, warm the land, set in the evening | sky light day sunshine
the sea     | it   | blue deep wide | crash on the rocks, move with the wind, shine in the sun | water waves beach ocean
rain        | it   | cold soft gray | fall on the roof, fill the river, help the plants grow | water clouds umbrella storm
snow        | it   | white cold soft | fall in winter, cover the ground, melt in the sun | winter ice snowman
cats        | they | soft quiet clever | sleep in the sun, chase mice, drink milk | cat kitten fur mice
dogs        | they | loyal friendly happy | run in the park, wag their tails, play with a ball | dog puppy tail bark
birds       | they | small free bright | sing in the morning, fly over the trees, build nests | bird nest wings feathers
trees       | they | tall green old | grow in the forest, give us shade, lose their leaves in autumn | tree leaves forest branches
flowers     | they | pretty colorful sweet | grow in the garden, open in the spring, smell sweet | flower garden petals bees
the forest  | it   | dark quiet green | hide many animals, grow thick with trees, fill with bird songs | trees wood path
mountains   | they | tall cold rocky | rise above the clouds, have snow on top, stand for many years | mountain rocks hills peak
rivers      | they | long fast cool | flow to the sea, carry water, run through the valley | river water bridge valley
the beach   | it   | sunny warm sandy | have soft sand, meet the sea, fill with people in summer | sand sea waves shells
winter      | it   | cold dark long | bring snow, make the days short, keep us inside | snow ice coat
summer      | it   | hot sunny long | bring warm days, make the fruit ripe, give us long evenings | sun holiday beach
spring      | it   | fresh green warm | bring new flowers, wake the trees, fill the fields with grass | flowers grass birds
autumn      | it   | cool golden windy | turn the leaves red, bring the harvest, come after summer | leaves harvest
the wind    | it   | strong cool wild | blow through the trees, move the clouds, push the boats | air storm breeze
clouds      | they | white soft gray | float across the sky, bring rain, hide the sun | cloud sky rain
stars       | they | bright small far | shine at night, fill the dark sky, shine over the sea | star night sky space
the night   | it   | dark quiet cool | come after the evening, bring sleep, hide the hills | moon stars sleep
the morning | it   | fresh bright calm | start the day, wake the birds, bring the light | breakfast sunrise day
bread       | it   | warm soft fresh | come from the oven, taste good with butter, feed many people | oven butter baker flour
coffee      | it   | hot dark strong | wake people up, smell good in the morning, come from beans | cup beans
tea         | it   | hot calm sweet | warm the hands, come from leaves, taste good with milk | cup kettle
music       | it   | loud sweet happy | fill the room, make people dance, help us relax | song songs piano guitar
books       | they | old thick useful | tell stories, teach us many things, sit on the shelf | book stories pages reading library
the town    | it   | busy loud big | stay awake all night, have tall buildings, fill with cars | streets buildings traffic
the farm    | it   | quiet green busy | grow food, keep cows and pigs, wake early | farmer cows fields barn
horses      | they | strong fast gentle | run across the field, eat hay, pull carts | horse hay rider saddle
fish        | they | quick shiny small | swim in the river, live in the water, hide under rocks | water fins pond
the garden  | it   | green quiet pretty | grow flowers, need water, need sun and rain | flowers plants soil
school      | it   | busy big fun | teach children, start in the morning, have many classes | teacher students lessons classroom
friends     | they | kind funny loyal | help each other, share stories, laugh together | friend friendship
family      | it   | warm close big | share meals, care for each other, meet on holidays | parents children home
the kitchen | it   | warm busy clean | smell of fresh bread, hold many pots, feed the family | cook pots food stove
trains      | they | long fast loud | run on tracks, carry people, stop at stations | train tracks station rails
cars        | they | fast shiny loud | drive on roads, need fuel, carry families | car road wheels driver
boats       | they | small slow white | sail on the water, carry people, rest in the harbor | boat sail harbor
the sky     | it   | blue wide clear | change color at sunset, hold the clouds, turn dark at night | clouds blue
fire        | it   | hot bright red | keep us warm, burn wood, give light | flames smoke heat
ice         | it   | cold hard clear | melt in the sun, cover the lake, keep drinks cold | frozen lake
bees        | they | busy small useful | make honey, visit flowers, live in hives | bee honey hive
apples      | they | red sweet fresh | grow on trees, make good pies, fall in autumn | apple fruit pie orchard
cake        | it   | sweet soft rich | make people happy, sit on the table, need sugar and eggs | sugar birthday candles party
soup        | it   | hot thick good | warm the body, cook in a big pot, taste good in winter | bowl spoon pot
the park    | it   | green quiet big | have tall trees, welcome children, open every day | grass bench playground
games       | they | fun long new | bring friends together, teach us rules, make us laugh | game players rules
dancing     | it   | fun happy free | make people happy, need good music, keep the body strong | dance dancers steps
painting    | it   | calm colorful quiet | need brushes and paint, use many colors, make people happy | paint brush artist picture
the desert  | it   | hot dry wide | have little water, hide small animals, glow at sunset | sand camels dunes
islands     | they | small sunny green | sit in the sea, have long beaches, welcome many people | island sea palm
the village | it   | small quiet old | have one small shop, sit near the river, have a small school | houses villagers
candles     | they | small warm bright | light the room, burn slowly, smell nice | candle flame wax
kites       | they | colorful light high | fly in the wind, dance in the sky, need a long string | kite string
frogs       | they | green small noisy | jump into ponds, eat flies, sing at night | frog pond
rabbits     | they | soft fast shy | eat carrots, dig holes, hop across the grass | rabbit bunny carrots
owls        | they | wise quiet old | hunt at night, sleep during the day, have big eyes | owl feathers
elephants   | they | big strong gentle | have long trunks, live in herds, walk very far | elephant trunk herd
whales      | they | huge gentle slow | swim in the ocean, sing long songs, eat small fish | whale ocean
lions       | they | brave strong proud | hunt in groups, roar loudly, sleep in the shade | lion mane roar
home        | it   | warm safe quiet | keep us safe, keep us warm, welcome our friends | house rooms
chocolate   | it   | sweet dark rich | melt in the mouth, come from cocoa, make a nice gift | cocoa candy
bicycles    | they | light fast quiet | have two wheels, need no fuel, take us to school | bicycle bike wheels ride
cows        | they | big gentle calm | eat grass, give milk, live on the farm | cow milk grass farm
ducks       | they | noisy small happy | swim in the pond, eat bread, fly south in autumn | duck pond
pigs        | they | pink clever round | roll in the mud, eat a lot, live on the farm | pig mud farm
sheep       | they | soft white gentle | eat grass, give us wool, walk in the fields | wool lamb fields
monkeys     | they | funny clever fast | climb trees, eat bananas, play in the trees | monkey bananas jungle
tigers      | they | strong fast proud | hunt at night, have orange fur, live in the jungle | tiger stripes jungle
bears       | they | big strong brown | sleep in winter, eat honey, catch fish in rivers | bear cave honey
wolves      | they | wild fast strong | hunt in packs, howl at the moon, live in the forest | wolf pack howl
the lake    | it   | calm cold blue | shine in the sun, turn to ice in winter, hold many fish | water fish boats
storms      | they | loud dark wild | bring heavy rain, wake the town, pass by quickly | storm thunder rain wind
rainbows    | they | colorful bright pretty | come after rain, fill the sky with color, make people smile | rainbow colors sky
milk        | it   | white cold fresh | come from cows, make us strong, taste good with cake | cow glass
holidays    | they | happy long fun | bring families together, give us time to rest, come every year | holiday rest travel
parties     | they | loud happy fun | have music and cake, bring friends together, last all night | party music guests
shoes       | they | new warm black | keep our feet warm, come in pairs, come in many colors | shoe feet laces
the harbor  | it   | busy old quiet | hold many boats, smell of fish, wake before the sun | boats ships sea
butterflies | they | pretty colorful light | dance in the air, visit the gardens, fly from flower to flower | butterfly wings flowers
penguins    | they | funny small brave | swim in cold water, live on the ice, walk in a line | penguin ice snow
the library | it   | quiet big old | hold many books, open every morning, help students learn | books shelves reading
"""


def _topic(row: str) -> Topic:
    """A :class:`Topic` from a row of :data:`_TOPIC_TABLE`."""
    subject, pronoun, adjectives, verbs, words = (field.strip() for field in row.split("|"))
    name = subject.split()[-1]
    return Topic(
        name=name,
        subject=subject,
        plural=pronoun == "they",
        adjectives=tuple(adjectives.split()),
        verbs=tuple(verbs.split(", ")),
        words=frozenset(words.split()) | {name},
    )


_TOPIC_LIST: tuple[Topic, ...] = tuple(_topic(row) for row in _TOPIC_TABLE.strip().splitlines())
TOPICS: dict[str, Topic] = {topic.name: topic for topic in _TOPIC_LIST}


# --------------------------------------------------------------------------------------------------------
# The sentence generator
# --------------------------------------------------------------------------------------------------------


def _third_person(predicate: str) -> str:
    """Conjugate a base-form predicate for a singular subject.

    >>> [_third_person(p) for p in ["shine at night", "have snow", "carry water", "push the boats", "go home"]]
    ['shines at night', 'has snow', 'carries water', 'pushes the boats', 'goes home']
    """
    verb, _, rest = predicate.partition(" ")
    if verb == "have":
        verb = "has"
    elif verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        verb += "es"
    elif verb.endswith("y") and verb[-2] not in "aeiou":
        verb = verb[:-1] + "ies"
    else:
        verb += "s"
    return f"{verb} {rest}".strip()


# Templates by shape. {S}/{s}: subject capitalised or not; {be}: is/are; {pron}: it/they; {A}/{B}: two
# different adjectives; {V}/{W}: two different predicates. Lengths (subject of L words) run from L+2 to L+7
# words, so every topic has sentences of every exact_words length 4..8.
_ADJECTIVE_TEMPLATES = (
    "{S} {be} {A}.",
    "We love {s}.",
    "{S} {be} so {A}.",
    "I really like {s}.",
    "I think {s} {be} {A}.",
    "{S} {be} very {A} today.",
    "{S} {be} {A} and {B}.",
    "Many people say {s} {be} {A}.",
    "My friends and I love {s}.",
    "I like {s} because {pron} {be} {A}.",
    "Children love {s} because {pron} {be} {A}.",
    "I think {s} {be} {A} and {B}.",
    "Many people say that {s} {be} very {A}.",
)
_VERB_TEMPLATES = (
    "{S} {V}.",
    "{S} always {V}.",
    "Everyone knows that {s} {V}.",
    "{S} {V} and {W}.",
)
_INCLUDE_TEMPLATES = (
    "I painted a picture of {s} in {w}.",
    "I drew {s} with {aw} pencil.",
    "My {w} book is about {s}.",
    "I saw {s} from my {w} window.",
)
_INCLUDE_WORDS = ("blue", "red", "green", "yellow", "white", "black")
_EXACT_WORD_COUNTS = (4, 5, 6, 7, 8)


@functools.lru_cache(maxsize=None)
def _topic_sentences(name: str) -> tuple[str, ...]:
    """Every sentence the generator can say about a topic (comma-free, first letter capitalised)."""
    topic = TOPICS[name]
    conjugate = (lambda v: v) if topic.plural else _third_person
    base = {
        "S": _capitalise(topic.subject), "s": topic.subject, "be": "are" if topic.plural else "is",
        "pron": "they" if topic.plural else "it",
    }
    sentences = []
    for template in _ADJECTIVE_TEMPLATES:
        for a, b in itertools.permutations(topic.adjectives, 2):
            if "{B}" not in template and b != topic.adjectives[(topic.adjectives.index(a) + 1) % 3]:
                continue  # one sentence per adjective for single-adjective templates
            sentences.append(template.format(A=a, B=b, **base))
    for template in _VERB_TEMPLATES:
        for v, w in itertools.permutations(topic.verbs, 2):
            if "{W}" not in template and w != topic.verbs[(topic.verbs.index(v) + 1) % 3]:
                continue
            sentences.append(template.format(V=conjugate(v), W=conjugate(w), **base))
    return tuple(dict.fromkeys(sentences))


def _include_sentence(topic: Topic, word: str, rng: random.Random) -> str:
    template = rng.choice(_INCLUDE_TEMPLATES)
    return _capitalise(template.format(s=topic.subject, w=word, aw=_article(word)))


def topic_sentence(topic: str, rng: random.Random, n_words: int | None = None, include: str | None = None) -> str:
    """A simple sentence about ``topic`` (a key of :data:`TOPICS`), optionally with exactly ``n_words`` words
    or containing the word ``include``.

    >>> sentence = topic_sentence("moon", random.Random(1), n_words=4)
    >>> sentence.startswith("The moon "), len(sentence.split())
    (True, 4)
    >>> topic_sentence("cats", random.Random(1), include="blue")
    'I drew cats with a blue pencil.'
    """
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; known topics: {sorted(TOPICS)}")
    if include is not None:
        return _include_sentence(TOPICS[topic], include, rng)
    candidates = _topic_sentences(topic)
    if n_words is not None:
        candidates = tuple(s for s in candidates if _word_count(s) == n_words)
        if not candidates:
            raise ValueError(f"the generator has no {n_words}-word sentence about {topic!r}")
    return rng.choice(candidates)


def _other_topic_sentence(topic: Topic, rng: random.Random) -> str:
    """A sentence about a different topic that mentions none of ``topic``'s words."""
    names = [name for name in TOPICS if name != topic.name]
    rng.shuffle(names)
    for name in names:
        sentence = topic_sentence(name, rng)
        if not _mentions(sentence, topic.words):
            return sentence
    raise ValueError(f"every other topic's sentence mentions a word of {topic.name!r}")


# --------------------------------------------------------------------------------------------------------
# The complete-sentence check (its verbs include every topic's predicates)
# --------------------------------------------------------------------------------------------------------


#: Finite verbs and auxiliaries a complete sentence can be built on: copulas, auxiliaries and modals, the verbs of
#: the world's sentence templates and topics, and common English verbs in base, third-person and past forms
#: (the same check serves real models' answers on a GPU, so the list is not limited to the embedded world).
_VERB_STEMS = """
    be am is are was were been being have has had do does did can could will would shall should may might must
    love like think say know see paint draw hold open help light shine rise warm set crash move learn make go come
    take give get find tell feel look want need use work call try ask seem leave keep let begin show hear play run
    live believe bring happen write sit stand lose pay meet include continue change lead understand watch follow
    stop create speak read spend grow walk win offer remember consider appear buy wait serve die send expect build
    stay fall cut reach kill remain suggest raise pass sell require report decide pull carry swim fly sing eat
    drink sleep fill flow glow sparkle cover protect bloom climb roll fall enjoy visit enjoy teach sound smell taste
    mean turn start hope wish dream shout cry smile laugh dance jump wave forget miss own hate prefer adore admire
    notice wonder imagine cook bake feed hide fit float sink burn freeze melt shake bark purr chase hunt bite
    dig nest hatch feel tend produce contain form cause allow add provide produce
"""
_IRREGULAR_VERB_FORMS = """
    saw seen drew drawn said knew known thought made went gone came took taken gave given got found told felt left
    kept let began begun showed shown heard ran brought wrote written sat stood lost paid met led understood spent
    grew grown won bought sent built fell fallen cut rose risen swam flew flown sang sung ate eaten drank drunk slept
    held meant taught forgot forgotten hid fed froze frozen shook bit dug
    dont doesnt didnt cant couldnt wont wouldnt shouldnt isnt arent wasnt werent hasnt havent hadnt im ive youre
    weve theyre
"""


def _verb_forms(stem: str) -> set[str]:
    """A verb stem with its third-person, past and -ing forms (regular rules; irregulars are listed apart).

    >>> sorted(_verb_forms("carry"))
    ['carried', 'carries', 'carry', 'carrying']
    """
    if stem.endswith("e"):
        return {stem, stem + "s", stem + "d", stem[:-1] + "ing"}
    if stem.endswith("y") and stem[-2:-1] not in ("a", "e", "o", "u"):
        return {stem, stem[:-1] + "ies", stem[:-1] + "ied", stem + "ing"}
    if stem.endswith(("s", "sh", "ch", "x", "z", "o")):
        return {stem, stem + "es", stem + "ed", stem + "ing"}
    return {stem, stem + "s", stem + "ed", stem + "ing"}


@functools.lru_cache(maxsize=1)
def verbs() -> frozenset[str]:
    """Every verb form :func:`is_complete_sentence` accepts: the lists above plus each topic's verbs."""
    stems = set(_VERB_STEMS.split()) | {predicate.split()[0] for topic in TOPICS.values() for predicate in topic.verbs}
    return frozenset({form for stem in stems for form in _verb_forms(stem)} | set(_IRREGULAR_VERB_FORMS.split()))


#: Words a complete sentence cannot end on: a copula or auxiliary still waiting for its complement ("The moon
#: is."), an article, a preposition, a conjunction, a possessive, an intensifier.
_DANGLING = frozenset("""
    a an the is are was were am be been being has have had do does did can could will would shall should may might
    must of in on at to for from by with into about and or but because that which who whose than very so my your
    our their its his her
""".split())


def is_complete_sentence(text: str) -> bool:
    """Whether ``text`` opens with a complete sentence: three words or more, a finite verb (:func:`verbs`), and
    not cut off on a word that needs a continuation (:data:`_DANGLING`). A documented heuristic, not a parser:
    it separates sentences from lists of words and from fragments (verbs: :func:`verbs`).

    >>> [is_complete_sentence(t) for t in ["The moon is bright.", "Birds fly over the sea.", "I love the sun."]]
    [True, True, True]
    >>> [is_complete_sentence(t) for t in ["Moon apple tiger river.", "The moon is.", "bright moon", ""]]
    [False, False, False, False]
    """
    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    words = _tokens(first)
    if _word_count(first) < 3 or not any(ch.isalpha() for ch in first):
        return False
    if not any(word in verbs() for word in words):
        return False
    return words[-1] not in _DANGLING


# --------------------------------------------------------------------------------------------------------
# The base of the constraint and open-ended families
# --------------------------------------------------------------------------------------------------------


class _TopicFamily(Family):
    """Shared parts of the constraint and open-ended families: topic lookup and on-topic words."""

    def _topic_of(self, params: Mapping[str, Any]) -> Topic:
        name = _param(params, "topic", self.name)
        if name not in TOPICS:
            raise ValueError(f"{self.name} params name unknown topic {name!r}; known topics: {sorted(TOPICS)}")
        return TOPICS[name]

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        return set(self._topic_of(params).words)

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        return is_complete_sentence(response)

    def facts(self, key: str, rng: random.Random) -> list[str]:
        topic = self._fields(key)[-1]
        return [topic_sentence(topic, rng)]
