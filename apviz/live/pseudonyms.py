"""Friendly names for devices on the public screen: "Yellow Fox", "Gelber Fuchs", "Renard jaune".

A visitor chose their phone's DHCP hostname, so in exhibit and classroom modes the kiosk never shows
it. Instead every device gets a colour and an animal. The colour is the one the kiosk draws the
device in (the view carries it as ``colour``: the first colour from the public id's hash that no
present device has, :func:`free_colour`), so "Yellow Fox" is the yellow line; the animal is picked
from a keyed hash of the device key, a per-run salt and an assignment counter. That makes a name
stable while the device stays, unguessable from the MAC, and new when the device comes back after it
was forgotten (the counter moved on, and nothing about it was kept).

German adjectives decline with the animal's gender without an article ("Gelber Fuchs", "Gelbe
Eule", "Gelbes Pferd"), so each colour carries its three forms. French puts the colour after the
noun and makes it agree with the noun's own gender ("Renard vert", "Tortue verte"), so each colour
has a masculine and a feminine form and each animal its French gender (which need not be the German
one: "der Otter" but "la loutre").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

LANGUAGES = ("en", "de", "fr")


@dataclass(frozen=True, slots=True)
class Colour:
    en: str
    de_m: str
    de_f: str
    de_n: str
    fr_m: str
    fr_f: str

    def word(self, lang: str, gender: str) -> str:
        """The colour as it goes with a noun of ``gender`` ("m", "f" or "n") in ``lang``."""
        if lang == "de":
            return {"m": self.de_m, "f": self.de_f, "n": self.de_n}[gender]
        if lang == "fr":
            return self.fr_f if gender == "f" else self.fr_m
        return self.en


@dataclass(frozen=True, slots=True)
class Animal:
    en: str
    de: str
    gender: str  # "m" | "f" | "n": the German noun's gender
    fr: str
    fr_gender: str  # "m" | "f": the French noun's gender


#: Index i names the colour of ``.dev-c{i}`` in web/css/base.css; keep both in step.
COLOURS: tuple[Colour, ...] = (
    Colour("Yellow", "Gelber", "Gelbe", "Gelbes", "jaune", "jaune"),  # #f0e442
    Colour("Orange", "Oranger", "Orange", "Oranges", "orange", "orange"),  # #e69f00
    Colour("Pink", "Pinker", "Pinke", "Pinkes", "rose", "rose"),  # #cc79a7
    Colour("Purple", "Violetter", "Violette", "Violettes", "violet", "violette"),  # #b9a2ff
    Colour("Golden", "Goldener", "Goldene", "Goldenes", "doré", "dorée"),  # #d6b27c
    Colour("Green", "Grüner", "Grüne", "Grünes", "vert", "verte"),  # #b8e04a
    Colour("Silver", "Silberner", "Silberne", "Silbernes", "argenté", "argentée"),  # #e3e9ef
)

ANIMALS: tuple[Animal, ...] = tuple(
    Animal(en, de, g, fr, fr_g)
    for en, de, g, fr, fr_g in (
        ("Fox", "Fuchs", "m", "Renard", "m"),
        ("Owl", "Eule", "f", "Chouette", "f"),
        ("Otter", "Otter", "m", "Loutre", "f"),
        ("Bear", "Bär", "m", "Ours", "m"),
        ("Wolf", "Wolf", "m", "Loup", "m"),
        ("Hedgehog", "Igel", "m", "Hérisson", "m"),
        ("Badger", "Dachs", "m", "Blaireau", "m"),
        ("Hare", "Hase", "m", "Lièvre", "m"),
        ("Deer", "Hirsch", "m", "Cerf", "m"),
        ("Squirrel", "Eichhörnchen", "n", "Écureuil", "m"),
        ("Beaver", "Biber", "m", "Castor", "m"),
        ("Lynx", "Luchs", "m", "Lynx", "m"),
        ("Eagle", "Adler", "m", "Aigle", "m"),
        ("Falcon", "Falke", "m", "Faucon", "m"),
        ("Penguin", "Pinguin", "m", "Pingouin", "m"),
        ("Dolphin", "Delfin", "m", "Dauphin", "m"),
        ("Whale", "Wal", "m", "Baleine", "f"),
        ("Seal", "Robbe", "f", "Phoque", "m"),
        ("Turtle", "Schildkröte", "f", "Tortue", "f"),
        ("Frog", "Frosch", "m", "Grenouille", "f"),
        ("Lizard", "Eidechse", "f", "Lézard", "m"),
        ("Tiger", "Tiger", "m", "Tigre", "m"),
        ("Lion", "Löwe", "m", "Lion", "m"),
        ("Zebra", "Zebra", "n", "Zèbre", "m"),
        ("Giraffe", "Giraffe", "f", "Girafe", "f"),
        ("Elephant", "Elefant", "m", "Éléphant", "m"),
        ("Panda", "Panda", "m", "Panda", "m"),
        ("Koala", "Koala", "m", "Koala", "m"),
        ("Kangaroo", "Känguru", "n", "Kangourou", "m"),
        ("Camel", "Kamel", "n", "Chameau", "m"),
        ("Horse", "Pferd", "n", "Cheval", "m"),
        ("Goat", "Ziege", "f", "Chèvre", "f"),
        ("Sheep", "Schaf", "n", "Mouton", "m"),
        ("Cat", "Katze", "f", "Chat", "m"),
        ("Mouse", "Maus", "f", "Souris", "f"),
        ("Bee", "Biene", "f", "Abeille", "f"),
        ("Butterfly", "Schmetterling", "m", "Papillon", "m"),
        ("Ladybird", "Marienkäfer", "m", "Coccinelle", "f"),
        ("Snail", "Schnecke", "f", "Escargot", "m"),
        ("Octopus", "Krake", "m", "Pieuvre", "f"),
        ("Crab", "Krabbe", "f", "Crabe", "m"),
        ("Shark", "Hai", "m", "Requin", "m"),
        ("Parrot", "Papagei", "m", "Perroquet", "m"),
        ("Flamingo", "Flamingo", "m", "Flamant", "m"),
        ("Swan", "Schwan", "m", "Cygne", "m"),
        ("Duck", "Ente", "f", "Canard", "m"),
        ("Raven", "Rabe", "m", "Corbeau", "m"),
        ("Hamster", "Hamster", "m", "Hamster", "m"),
        ("Llama", "Lama", "n", "Lama", "m"),
        ("Moose", "Elch", "m", "Élan", "m"),
    )
)


def colour_index(public_id: str) -> int:
    """The kiosk's palette index for a public device id: FNV-1a over UTF-16 code units, exactly as
    ``deviceColourIndex`` in web/js/colours.js, so the name's colour is the colour on screen."""
    h = 0x811C9DC5
    data = public_id.encode("utf-16-le")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | data[i + 1] << 8)) * 0x01000193) & 0xFFFFFFFF
    return h % len(COLOURS)


def free_colour(start: int, taken: set[int]) -> int:
    """The first colour from ``start`` on that no present device has; ``start`` when all are taken.

    Seven colours for a room of phones: with four phones two of them sharing purple is confusing
    ("Purple Horse" beside "Purple Lynx"), so while the palette has a free colour nobody shares one.
    """
    for step in range(len(COLOURS)):
        candidate = (start + step) % len(COLOURS)
        if candidate not in taken:
            return candidate
    return start


def home_label(hostname: str | None, vendor: str | None, public_id: str) -> str:
    """A home-mode device's label: its DHCP name, else its maker and a short suffix ("Apple ·3fa").

    Two phones without a name were both "device"; the suffix (three characters of the public id,
    itself a keyed hash) tells them apart and says nothing about the MAC.
    """
    if hostname:
        return hostname
    suffix = public_id[-3:] if public_id else "?"
    return f"{vendor or 'device'} ·{suffix}"


def render(colour: int, animal: int, lang: str = "en") -> str:
    """The words for a (colour, animal) pair in ``lang`` (one of :data:`LANGUAGES`)."""
    a = ANIMALS[animal]
    c = COLOURS[colour]
    if lang == "fr":
        return f"{a.fr} {c.word('fr', a.fr_gender)}"
    if lang == "de":
        return f"{c.word('de', a.gender)} {a.de}"
    return f"{c.en} {a.en}"


class Pseudonyms:
    """Assigns each present device an animal, unique per colour among present devices.

    Only the owner of the live state and the views call this (one event loop), so no lock.
    """

    def __init__(self, salt: bytes | None = None) -> None:
        self._salt = salt if salt is not None else os.urandom(16)
        self._animals: dict[str, tuple[int, int]] = {}  # device key -> (colour, animal)
        self._counter = 0

    def __len__(self) -> int:
        return len(self._animals)

    def pick(self, key: str, public_id: str) -> tuple[int, int]:
        """The (colour, animal) of ``key``; assigned on first sight."""
        hit = self._animals.get(key)
        if hit is not None:
            return hit
        colour = free_colour(colour_index(public_id), {c for c, _ in self._animals.values()})
        self._counter += 1
        digest = hashlib.blake2s(
            f"{key}\0{self._counter}".encode(), key=self._salt[:32], digest_size=4
        ).digest()
        start = int.from_bytes(digest, "big") % len(ANIMALS)
        taken = {a for c, a in self._animals.values() if c == colour}
        animal = start
        for step in range(len(ANIMALS)):  # the first free animal from the hashed start
            candidate = (start + step) % len(ANIMALS)
            if candidate not in taken:
                animal = candidate
                break
        self._animals[key] = (colour, animal)
        return colour, animal

    def colour(self, key: str, public_id: str) -> int:
        """The palette index the screens draw ``key`` in (the same as its pseudonym's colour word)."""
        return self.pick(key, public_id)[0]

    def name(self, key: str, public_id: str, lang: str = "en") -> str:
        return render(*self.pick(key, public_id), lang=lang)

    def forget(self, key: str) -> None:
        self._animals.pop(key, None)

    def retain(self, keys: Iterable[str]) -> None:
        """Drop the names of devices no longer present, so a returning device gets a new one."""
        present = set(keys)
        for key in [k for k in self._animals if k not in present]:
            del self._animals[key]

    def clear(self) -> None:
        self._animals.clear()
