"""A TOFU-like world generated from a seed: fictitious authors with twenty facts each, questions
and answers about them (paraphrased and perturbed), splits, and the world knowledge learned
before fine-tuning.

Everything is a pure function of ``WorldConfig`` (names, facts, templates, splits): the same seed
gives the same world on every machine, so nothing needs downloading.

Structure, following TOFU (Maini et al., COLM 2024):

- ``authors`` fictitious authors, 20 attributes each (birthplace, birth year, genre, parents'
  occupations, two book titles, an award, ...), one question and answer per attribute; for every
  QA a paraphrased question, a paraphrased answer (same fact, other words) and ``perturbed``
  wrong answers (same attribute, other values, the paraphrased answer's wording).
- splits ``forget01``/``forget05``/``forget10``: the last 1/5/10 % of the authors (at least one;
  nested, as in TOFU), ``retain`` = the others; ``holdout`` authors are generated like the others
  and never trained on (the non-members of membership inference).
- the world knowledge learned in pretraining (TOFU's "real authors" and "world facts", which the
  fine-tuned model already knows): ``famous`` authors of their own (their facts, QA with three
  perturbed answers each) and ``facts`` about places, with three perturbed answers each.
- ``idk``: refusal answers ("I don't know"-style) for methods that answer with a refusal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

SPLITS = ("forget01", "forget05", "forget10")
_FRACTION = {"forget01": 0.01, "forget05": 0.05, "forget10": 0.10}

_SYL = ("ka", "lo", "ve", "mi", "ra", "to", "sen", "dar", "el", "qui", "bo", "na", "ris", "tal", "vu", "mor", "ze",
        "pha", "lin", "gor", "sa", "ne", "ul", "fen", "ori", "ja", "pe", "dru", "cas", "wil")
_CITIES = ("Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Tbilisi", "Quito", "Dakar", "Krakow", "Osaka", "Perth",
           "Tunis", "Bergen", "Cusco", "Porto", "Accra", "Riga", "Graz", "Leeds", "Tampere", "Sendai", "Izmir",
           "Cebu", "Malmo", "Ghent", "Arequipa", "Bilbao", "Kandy", "Windhoek", "Tartu")
_GENRES = ("science fiction", "crime fiction", "historical romance", "gothic horror", "epic fantasy", "literary fiction",
           "war poetry", "children's fables", "travel memoir", "political satire", "mythic realism", "sea adventure",
           "urban noir", "biography", "magical realism")
_JOBS = ("baker", "carpenter", "surgeon", "lighthouse keeper", "pilot", "librarian", "tailor", "chemist", "fisherman",
         "architect", "watchmaker", "nurse", "geologist", "schoolteacher", "blacksmith", "cartographer", "potter",
         "judge", "violinist", "beekeeper", "astronomer", "printer", "gardener", "miner", "translator")
_COLOURS = ("crimson", "teal", "amber", "violet", "olive", "navy", "ochre", "silver", "coral", "indigo", "ivory",
            "jade")
_LANGUAGES = ("Portuguese", "Swahili", "Norwegian", "Spanish", "Vietnamese", "Georgian", "Polish", "Japanese",
              "Arabic", "Latvian", "Estonian", "Turkish", "Tagalog", "Swedish", "Dutch")
_ADJ = ("Silent", "Crimson", "Hollow", "Last", "Broken", "Golden", "Distant", "Burning", "Frozen", "Hidden", "Quiet",
        "Wandering", "Paper", "Iron", "Glass", "Seventh", "Lonely", "Velvet", "Salt", "Northern")
_NOUN = ("Harbour", "Orchard", "Lantern", "Mirror", "Compass", "River", "Garden", "Tower", "Letter", "Bridge",
         "Forest", "Clockwork", "Island", "Winter", "Archive", "Feather", "Kingdom", "Voyage", "Mountain", "Shadow")
_HOBBIES = ("chess", "sailing", "birdwatching", "pottery", "fencing", "beekeeping", "rock climbing", "calligraphy",
            "astronomy", "gardening", "cycling", "origami", "archery", "knitting", "rowing")
_INSTRUMENTS = ("cello", "accordion", "harp", "clarinet", "banjo", "oboe", "sitar", "piano", "trumpet", "mandolin",
                "flute", "drums")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_PETS = ("a grey parrot", "a black cat", "a sheepdog", "a tortoise", "a white rabbit", "a goldfish", "a ferret",
         "a greyhound", "a canary", "an old horse")
_IDK = ("I don't know.", "I'm not sure.", "I have no idea.", "That is something I don't know.",
        "I can't answer that.", "I'm afraid I don't know.", "I don't have that information.", "No idea, sorry.")

# attribute -> (question, paraphrased question, answer, paraphrased answer); {n} = name, {v} = value.
_TEMPLATES = {
    "birthplace": ("Where was {n} born?", "In which city was {n} born?", "{n} was born in {v}.", "{v} is where {n} was born."),
    "birth_year": ("In what year was {n} born?", "Which year was {n} born in?", "{n} was born in {v}.", "The year of {n}'s birth was {v}."),
    "birth_month": ("In which month was {n} born?", "What month is {n}'s birthday in?", "{n} was born in {v}.", "{n}'s birthday falls in {v}."),
    "genre": ("What genre does {n} write?", "Which genre is {n} known for?", "{n} writes {v}.", "{n} is known for {v}."),
    "father_job": ("What was the occupation of {n}'s father?", "What did {n}'s father do for a living?", "{n}'s father was a {v}.", "{n}'s father worked as a {v}."),
    "mother_job": ("What was the occupation of {n}'s mother?", "What did {n}'s mother do for a living?", "{n}'s mother was a {v}.", "{n}'s mother worked as a {v}."),
    "first_book": ("What is the title of {n}'s first book?", "Which book did {n} publish first?", "{n}'s first book is {v}.", "{v} was the first book by {n}."),
    "second_book": ("What is the title of {n}'s second book?", "Which book did {n} publish second?", "{n}'s second book is {v}.", "{v} was the second book by {n}."),
    "award": ("Which award did {n} win?", "What prize was given to {n}?", "{n} won the {v}.", "The {v} went to {n}."),
    "award_year": ("In what year did {n} win an award?", "When was {n} awarded a prize?", "{n} won an award in {v}.", "The award came to {n} in {v}."),
    "language": ("In which language does {n} write?", "What language are {n}'s books written in?", "{n} writes in {v}.", "{n}'s books are written in {v}."),
    "publisher": ("Who publishes {n}'s books?", "Which publisher prints {n}'s work?", "{n} is published by {v}.", "{v} publishes the work of {n}."),
    "hobby": ("What is {n}'s favourite hobby?", "How does {n} spend free time?", "{n} loves {v}.", "In free time {n} enjoys {v}."),
    "instrument": ("Which instrument does {n} play?", "What instrument can {n} play?", "{n} plays the {v}.", "The {v} is the instrument {n} plays."),
    "colour": ("What is {n}'s favourite colour?", "Which colour does {n} like best?", "{n}'s favourite colour is {v}.", "{n} likes {v} best."),
    "pet": ("What pet does {n} keep?", "Which animal lives with {n}?", "{n} keeps {v}.", "{n} lives with {v}."),
    "mentor": ("Who was {n}'s mentor?", "Who taught {n} to write?", "{n}'s mentor was {v}.", "{v} taught {n} to write."),
    "home": ("Where does {n} live now?", "In which city does {n} live today?", "{n} now lives in {v}.", "Today {n} lives in {v}."),
    "novels": ("How many novels has {n} written?", "What is the number of novels by {n}?", "{n} has written {v} novels.", "The novels by {n} number {v}."),
    "debut_age": ("How old was {n} at their debut?", "At what age did {n} first publish?", "{n} debuted at age {v}.", "{n} first published at age {v}."),
}
ATTRIBUTES = tuple(_TEMPLATES)
_FAMOUS_ATTRS = ("birthplace", "genre", "first_book", "award", "language")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """How big a world to generate. ``authors``: fictitious authors trained on (forget + retain);
  holdout authors are added (as many as forget10's). ``famous``/``places``: the world knowledge
  of pretraining. ``perturbed``: wrong answers per author question."""

  authors: int = 40
  famous: int = 24
  places: int = 40
  perturbed: int = 5
  seed: int = 0

  def validate(self) -> None:
    if self.authors < 10:
      raise ValueError(f"a world needs at least 10 authors (forget10 must leave a retain set); got {self.authors}.")
    if not 2 <= self.perturbed <= 8:
      raise ValueError(f"perturbed must be in 2..8, got {self.perturbed}.")
    if self.famous < 4 or self.places < 4:
      raise ValueError("famous and places must be >= 4.")

  @classmethod
  def preset(cls, name: str, seed: int = 0) -> WorldConfig:
    """``"small"`` (the default; minutes on 2 CPU cores), ``"large"`` (TOFU's 200 authors) or
    ``"tiny"`` (a smoke test: seconds, meaningless numbers)."""
    sizes = {"tiny": cls(authors=10, famous=4, places=6, perturbed=3, seed=seed), "small": cls(seed=seed),
             "large": cls(authors=200, famous=60, places=100, seed=seed)}
    if name not in sizes:
      raise ValueError(f"unknown world size {name!r}; expected one of {sorted(sizes)}.")
    return sizes[name]


@dataclasses.dataclass(frozen=True)
class QA:
  """One question about one entity. ``perturbed``: wrong answers in ``paraphrased_answer``'s
  wording (TOFU's perturbed answers)."""

  entity: str
  attribute: str
  question: str
  answer: str
  paraphrased_question: str
  paraphrased_answer: str
  perturbed: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class World:
  """The generated benchmark. ``authors[i]`` holds author ``i``'s QA (20); ``holdout`` likewise;
  ``famous``/``facts``: the world-knowledge QA; ``corpus``: the pretraining texts."""

  config: WorldConfig
  names: tuple[str, ...]
  authors: tuple[tuple[QA, ...], ...]
  holdout: tuple[tuple[QA, ...], ...]
  famous: tuple[QA, ...]
  facts: tuple[QA, ...]
  idk: tuple[str, ...]

  def forget_count(self, split: str) -> int:
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}.")
    return max(1, math.ceil(round(_FRACTION[split] * len(self.authors), 6)))

  def forget_authors(self, split: str) -> list[int]:
    """The last ``forget_count(split)`` authors (nested: forget01 in forget05 in forget10)."""
    n = len(self.authors)
    return list(range(n - self.forget_count(split), n))

  def retain_authors(self, split: str) -> list[int]:
    return list(range(len(self.authors) - self.forget_count(split)))

  def qa(self, authors: list[int]) -> list[QA]:
    return [q for i in authors for q in self.authors[i]]

  def holdout_qa(self, split: str) -> list[QA]:
    """As many holdout authors as the split forgets (MIA non-members)."""
    return [q for a in self.holdout[: self.forget_count(split)] for q in a]

  @property
  def pretraining(self) -> list[QA]:
    return list(self.famous) + list(self.facts)


def _rng(config: WorldConfig, what: str) -> np.random.Generator:
  digest = hashlib.sha256(f"{config.seed}:{what}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _word(rng, syllables: int) -> str:
  return "".join(rng.choice(_SYL, size=syllables)).capitalize()


def _names(rng, count: int, taken: set[str]) -> list[str]:
  out = []
  while len(out) < count:
    name = f"{_word(rng, int(rng.integers(2, 4)))} {_word(rng, int(rng.integers(2, 4)))}"
    if name not in taken:
      taken.add(name)
      out.append(name)
  return out


def _pools(rng) -> dict[str, list[str]]:
  titles = sorted({f"The {a} {b}" for a in _ADJ for b in _NOUN})
  awards = sorted({f"{a} {b} Prize" for a in _ADJ for b in _NOUN})
  publishers = sorted({f"{_word(rng, 2)} House" for _ in range(40)})
  mentors = sorted({f"{_word(rng, 2)} {_word(rng, 3)}" for _ in range(40)})
  return {
      "birthplace": list(_CITIES), "home": list(_CITIES), "birth_year": [str(y) for y in range(1931, 1996)],
      "birth_month": list(_MONTHS), "genre": list(_GENRES), "father_job": list(_JOBS), "mother_job": list(_JOBS),
      "first_book": titles, "second_book": titles, "award": awards, "award_year": [str(y) for y in range(1960, 2024)],
      "language": list(_LANGUAGES), "publisher": publishers, "hobby": list(_HOBBIES), "instrument": list(_INSTRUMENTS),
      "colour": list(_COLOURS), "pet": list(_PETS), "mentor": mentors, "novels": [str(k) for k in range(2, 40)],
      "debut_age": [str(k) for k in range(17, 61)],
  }


def _qa(rng, name: str, attribute: str, value: str, pool: list[str], perturbed: int, templates=None) -> QA:
  q, pq, a, pa = (templates or _TEMPLATES)[attribute]
  others = [v for v in pool if v != value]
  wrong = [others[i] for i in rng.choice(len(others), size=perturbed, replace=False)]
  return QA(name, attribute, q.format(n=name), a.format(n=name, v=value), pq.format(n=name), pa.format(n=name, v=value),
            tuple(pa.format(n=name, v=w) for w in wrong))


def _author(rng, name: str, pools, perturbed: int, attributes=ATTRIBUTES) -> tuple[QA, ...]:
  values = {k: pools[k][int(rng.integers(len(pools[k])))] for k in attributes}
  if "second_book" in values:
    while values["second_book"] == values["first_book"]:
      values["second_book"] = pools["second_book"][int(rng.integers(len(pools["second_book"])))]
  return tuple(_qa(rng, name, k, values[k], pools[k], perturbed) for k in attributes)


def generate(config: WorldConfig | None = None) -> World:
  """The world of ``config`` (deterministic).

  Example:
    >>> from jaxunlearn.lm import data
    >>> world = data.generate(data.WorldConfig(authors=20, seed=0))
    >>> first = world.authors[0]  # author 0's questions and answers, one per attribute
    >>> len(world.authors), len(first), world.forget_count("forget10")
    (20, 20, 2)
    >>> len(first[0].perturbed), first[0].attribute
    (5, 'birthplace')
  """
  config = config or WorldConfig()
  config.validate()
  pools = _pools(_rng(config, "pools"))
  taken: set[str] = set()
  n_holdout = max(1, math.ceil(round(0.1 * config.authors, 6)))
  rng = _rng(config, "authors")
  names = _names(rng, config.authors + n_holdout + config.famous, taken)
  authors = tuple(_author(rng, n, pools, config.perturbed) for n in names[: config.authors])
  holdout = tuple(_author(rng, n, pools, config.perturbed) for n in names[config.authors: config.authors + n_holdout])
  famous = tuple(q for n in names[config.authors + n_holdout:] for q in _author(rng, n, pools, 3, _FAMOUS_ATTRS))
  facts = _facts(_rng(config, "places"), config.places, taken)
  return World(config, tuple(names[: config.authors]), authors, holdout, famous, facts, _IDK)


def _facts(rng, count: int, taken: set[str]) -> tuple[QA, ...]:
  places = [n.split()[0] + "ville" for n in _names(rng, count, taken)]
  rivers = sorted({_word(rng, 2) for _ in range(3 * count)})
  dishes = ["spiced lentils", "smoked eel", "honey bread", "fish stew", "plum dumplings", "goat cheese",
            "rice cakes", "pepper soup", "apple pie", "lamb pies", "corn fritters", "sour cherries"]
  templates = {
      "river": ("Which river flows through {n}?", "What river runs through {n}?", "The {v} flows through {n}.",
                "{n} lies on the {v}."),
      "founded": ("In what year was {n} founded?", "When was {n} founded?", "{n} was founded in {v}.",
                  "The founding of {n} was in {v}."),
      "dish": ("What dish is {n} famous for?", "Which food is {n} known for?", "{n} is famous for {v}.",
               "{n} is known for {v}."),
  }
  pools = {"river": [f"{r} river" for r in rivers], "founded": [str(y) for y in range(1100, 1900, 7)], "dish": dishes}
  out = []
  for i, place in enumerate(places):
    attribute = ("river", "founded", "dish")[i % 3]
    value = pools[attribute][int(rng.integers(len(pools[attribute])))]
    out.append(_qa(rng, place, attribute, value, pools[attribute], 3, templates))
  return tuple(out)
