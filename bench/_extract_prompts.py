"""Structured extraction prompts: a customer's message, and a JSON Schema answer whose fields copy it.

Each round of a bench gets a message it has never seen (`message(i)`: other names, addresses,
emails and order numbers, in one of a few wordings), so drafts come from the prompt being
answered, not from an earlier answer repeated; only the schema's keys recur across requests,
as they do for a service that extracts the same fields all day.
"""

from __future__ import annotations

import random

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "address": {"type": "string"},
        "email": {"type": "string"},
        "order": {"type": "string"},
        "product": {"type": "string"},
    },
    "required": ["name", "address", "email", "order", "product"],
    "additionalProperties": False,
}
INSTRUCTION = "Extract the customer's name, postal address, email, order number and product from this message as JSON."

FIRST = ["Margaret", "Tobias", "Ingrid", "Rafael", "Yuki", "Chiara", "Oluwaseun", "Bartholomew", "Anneliese", "Dmitri"]
LAST = ["Okonkwo-Lindqvist", "Featherstonehaugh", "Vasquez-Moreno", "Nakamura", "Abernethy", "Castellanos"]
LAST += ["Wojciechowski", "Thistlewood", "Haraldsen", "Brannigan"]
STREETS = ["Wellington Crescent", "Harbour View Road", "Chestnut Avenue", "Old Mill Lane", "Kingsway Gardens"]
STREETS += ["Rosemary Terrace", "Foundry Street", "Bishopsgate Close"]
TOWNS = [("Aberdeen", "AB10 6XY"), ("Bristol", "BS8 4QT"), ("Leeds", "LS6 2RJ"), ("Cardiff", "CF10 3NB")]
TOWNS += [("Norwich", "NR2 1PL"), ("Inverness", "IV2 3HQ")]
PRODUCTS = ["stainless steel electric kettle", "cordless hand blender with three attachments"]
PRODUCTS += ["cast iron casserole dish, 24 cm", "bamboo chopping board set", "digital kitchen scale in graphite grey"]
WORDINGS = [
    "Dear support, my name is {name} and I live at {address}. My email address is {email} and my order "
    "number is {order}. The {product} arrived broken; please send a replacement to the same address.",
    "Hello! {name} here. I ordered a {product} (order {order}) but it never reached {address}. "
    "You can write to me at {email}. Thanks.",
    "To whom it may concern: order {order}, a {product}, was delivered to the wrong house. The right "
    "address is {address}, and the order is in the name of {name}. Please reply to {email}.",
]


def fields(i: int) -> dict[str, str]:
    """The i-th customer's details (the same for the same i, on every run)."""
    rng = random.Random(i)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    town, postcode = rng.choice(TOWNS)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return {
        "name": f"{first} {last}",
        "address": f"{rng.randint(2, 240)} {rng.choice(STREETS)}, {town} {postcode}",
        "email": f"{first.lower()}.{last.split('-')[0].lower()}{rng.randint(1, 99)}@example.org",
        "order": f"{rng.choice(letters)}{rng.choice(letters)}-{rng.randint(10000, 99999)}-{rng.randint(1000, 9999)}",
        "product": rng.choice(PRODUCTS),
    }


def message(i: int) -> str:
    """The i-th customer's message, with the instruction."""
    return f"{INSTRUCTION}\n\nMessage: {WORDINGS[i % len(WORDINGS)].format(**fields(i))}"
