"""Friendly names for devices on the public screen: "Yellow Fox", "Gelber Fuchs".

A visitor chose their phone's DHCP hostname, so in exhibit and classroom modes the kiosk never shows
it. Instead every device gets a colour and an animal. The colour is the one the kiosk already draws
the device in (``web/js/colours.js`` derives it from the public id), so "Yellow Fox" is the yellow
line; the animal is picked from a keyed hash of the device key, a per-run salt and an assignment
counter. That makes a name stable while the device stays, unguessable from the MAC, and new when the
device comes back after it was forgotten (the counter moved on, and nothing about it was kept).

German adjectives decline with the animal's gender without an article ("Gelber Fuchs", "Gelbe
Eule", "Gelbes Pferd"), so each colour carries its three forms.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

LANGUAGES = ("en", "de")


@dataclass(frozen=True, slots=True)
class Colour:
    en: str
    de_m: str
    de_f: str
    de_n: str

    def word(self, lang: str, gender: str) -> str:
        if lang == "de":
            return {"m": self.de_m, "f": self.de_f, "n": self.de_n}[gender]
        return self.en


@dataclass(frozen=True, slots=True)
class Animal:
    en: str
    de: str
    gender: str  # "m" | "f" | "n": the German noun's gender


#: Index i names the colour of ``.dev-c{i}`` in web/css/base.css; keep both in step.
COLOURS: tuple[Colour, ...] = (
    Colour("Yellow", "Gelber", "Gelbe", "Gelbes"),  # #f0e442
    Colour("Orange", "Oranger", "Orange", "Oranges"),  # #e69f00
    Colour("Pink", "Pinker", "Pinke", "Pinkes"),  # #cc79a7
    Colour("Purple", "Violetter", "Violette", "Violettes"),  # #b9a2ff
    Colour("Golden", "Goldener", "Goldene", "Goldenes"),  # #d6b27c
    Colour("Green", "Grüner", "Grüne", "Grünes"),  # #b8e04a
    Colour("Silver", "Silberner", "Silberne", "Silbernes"),  # #e3e9ef
)

ANIMALS: tuple[Animal, ...] = tuple(
    Animal(en, de, g)
    for en, de, g in (
        ("Fox", "Fuchs", "m"),
        ("Owl", "Eule", "f"),
        ("Otter", "Otter", "m"),
        ("Bear", "Bär", "m"),
        ("Wolf", "Wolf", "m"),
        ("Hedgehog", "Igel", "m"),
        ("Badger", "Dachs", "m"),
        ("Hare", "Hase", "m"),
        ("Deer", "Hirsch", "m"),
        ("Squirrel", "Eichhörnchen", "n"),
        ("Beaver", "Biber", "m"),
        ("Lynx", "Luchs", "m"),
        ("Eagle", "Adler", "m"),
        ("Falcon", "Falke", "m"),
        ("Penguin", "Pinguin", "m"),
        ("Dolphin", "Delfin", "m"),
        ("Whale", "Wal", "m"),
        ("Seal", "Robbe", "f"),
        ("Turtle", "Schildkröte", "f"),
        ("Frog", "Frosch", "m"),
        ("Lizard", "Eidechse", "f"),
        ("Tiger", "Tiger", "m"),
        ("Lion", "Löwe", "m"),
        ("Zebra", "Zebra", "n"),
        ("Giraffe", "Giraffe", "f"),
        ("Elephant", "Elefant", "m"),
        ("Panda", "Panda", "m"),
        ("Koala", "Koala", "m"),
        ("Kangaroo", "Känguru", "n"),
        ("Camel", "Kamel", "n"),
        ("Horse", "Pferd", "n"),
        ("Goat", "Ziege", "f"),
        ("Sheep", "Schaf", "n"),
        ("Cat", "Katze", "f"),
        ("Mouse", "Maus", "f"),
        ("Bee", "Biene", "f"),
        ("Butterfly", "Schmetterling", "m"),
        ("Ladybird", "Marienkäfer", "m"),
        ("Snail", "Schnecke", "f"),
        ("Octopus", "Krake", "m"),
        ("Crab", "Krabbe", "f"),
        ("Shark", "Hai", "m"),
        ("Parrot", "Papagei", "m"),
        ("Flamingo", "Flamingo", "m"),
        ("Swan", "Schwan", "m"),
        ("Duck", "Ente", "f"),
        ("Raven", "Rabe", "m"),
        ("Hamster", "Hamster", "m"),
        ("Llama", "Lama", "n"),
        ("Moose", "Elch", "m"),
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


def render(colour: int, animal: int, lang: str = "en") -> str:
    """The words for a (colour, animal) pair in ``lang`` ("en" or "de")."""
    a = ANIMALS[animal]
    noun = a.de if lang == "de" else a.en
    return f"{COLOURS[colour].word(lang, a.gender)} {noun}"


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
        colour = colour_index(public_id)
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
