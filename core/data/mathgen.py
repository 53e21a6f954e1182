"""Math word problems in GSM8K's style, from our own templates and vocabulary, seeded.

Each problem takes 1 to 4 arithmetic steps on whole numbers below 10,000 (a product always has
a factor of at most 12, a division a divisor of at most 12) and comes with a
short worked solution, one ``expression=result`` line per step, ending in ``#### N``. A
problem's *instance* is its template plus every value drawn for it; the held-out split is a
fixed slice of instance hashes, so no instance appears in both splits.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kemi", "Liam", "Maya",
         "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe"]
ITEMS = [("apple", "apples"), ("pencil", "pencils"), ("sticker", "stickers"), ("notebook", "notebooks"),
         ("cupcake", "cupcakes"), ("marble", "marbles"), ("book", "books"), ("ticket", "tickets"),
         ("candle", "candles"), ("plant", "plants"), ("toy car", "toy cars"), ("bracelet", "bracelets"),
         ("cookie", "cookies"), ("shell", "shells"), ("card", "cards"), ("balloon", "balloons")]
PLACES = ["the market", "a bookstore", "the school fair", "a garden shop", "the bakery", "a toy store"]
CONTAINERS = [("box", "boxes"), ("bag", "bags"), ("crate", "crates"), ("basket", "baskets"), ("jar", "jars")]
LIMIT = 9999


@dataclass(frozen=True)
class Problem:
    template: str
    values: tuple
    question: str
    solution: str
    answer: int

    @property
    def instance_key(self) -> str:
        return hashlib.sha1(repr((self.template, self.values)).encode()).hexdigest()

    @property
    def steps(self) -> int:
        return self.solution.count("\n")


class Reject(Exception):
    """The drawn values break a constraint (a result out of range, not whole)."""


def factors(rng: random.Random, large: int) -> tuple[int, int]:
    """Two factors of a product: one from 2 to 12, the other up to ``large``, in either order."""
    small, big = rng.randint(2, 12), rng.randint(2, large)
    return (small, big) if rng.random() < 0.5 else (big, small)


def step(lines: list[str], expr: str, value: int) -> int:
    if not 0 <= value <= LIMIT:
        raise Reject
    lines.append(f"{expr}={value}")
    return value


def finish(lines: list[str], answer: int) -> str:
    return "\n".join(lines + [f"#### {answer}"])


def buy_one(rng: random.Random):
    name, (item, items), place = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(PLACES)
    n, price = factors(rng, 99)
    lines: list[str] = []
    total = step(lines, f"{n}*{price}", n * price)
    q = f"{name} buys {n} {items} at {place}. Each {item} costs ${price}. How many dollars does {name} spend?"
    return (name, item, place, n, price), q, finish(lines, total), total


def buy_with_change(rng: random.Random):
    name, (item, items) = rng.choice(NAMES), rng.choice(ITEMS)
    n, price = factors(rng, 99)
    paid = rng.choice([100, 200, 500, 1000, 2000, 5000])
    lines: list[str] = []
    total = step(lines, f"{n}*{price}", n * price)
    change = step(lines, f"{paid}-{total}", paid - total)
    q = (f"{name} buys {n} {items} for ${price} each and pays with ${paid}. "
         f"How much change does {name} get back, in dollars?")
    return (name, item, n, price, paid), q, finish(lines, change), change


def two_purchases(rng: random.Random):
    name = rng.choice(NAMES)
    (i1, p1s), (i2, p2s) = rng.sample(ITEMS, 2)
    (a, pa), (b, pb) = factors(rng, 99), factors(rng, 99)
    lines: list[str] = []
    x = step(lines, f"{a}*{pa}", a * pa)
    y = step(lines, f"{b}*{pb}", b * pb)
    total = step(lines, f"{x}+{y}", x + y)
    q = (f"{name} buys {a} {p1s} at ${pa} each and {b} {p2s} at ${pb} each. "
         f"How many dollars does {name} spend in total?")
    return (name, i1, i2, a, pa, b, pb), q, finish(lines, total), total


def reading_left(rng: random.Random):
    name = rng.choice(NAMES)
    per_day, days = rng.randint(5, 99), rng.randint(2, 12)
    pages = per_day * days + rng.randint(10, 3000)
    lines: list[str] = []
    read = step(lines, f"{per_day}*{days}", per_day * days)
    left = step(lines, f"{pages}-{read}", pages - read)
    q = (f"A book has {pages} pages. {name} reads {per_day} pages every day for {days} days. "
         f"How many pages are left to read?")
    return (name, per_day, days, pages), q, finish(lines, left), left


def savings(rng: random.Random):
    name = rng.choice(NAMES)
    start, weekly, weeks = rng.randint(10, 2000), rng.randint(5, 250), rng.randint(2, 12)
    spent = rng.randint(5, 1500)
    lines: list[str] = []
    saved = step(lines, f"{weekly}*{weeks}", weekly * weeks)
    total = step(lines, f"{start}+{saved}", start + saved)
    left = step(lines, f"{total}-{spent}", total - spent)
    q = (f"{name} has ${start} in a savings jar and adds ${weekly} every week for {weeks} weeks. "
         f"Then {name} spends ${spent} on a bike. How many dollars are left?")
    return (name, start, weekly, weeks, spent), q, finish(lines, left), left


def share_equally(rng: random.Random):
    name, (item, items) = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each = rng.randint(2, 12), rng.randint(2, 99)
    total = friends * each
    lines: list[str] = []
    share = step(lines, f"{total}/{friends}", total // friends)
    q = f"{name} has {total} {items} and shares them equally among {friends} friends. How many {items} does each friend get?"
    return (name, item, friends, each), q, finish(lines, share), share


def share_then_give(rng: random.Random):
    name, (item, items) = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each = rng.randint(2, 12), rng.randint(5, 99)
    give = rng.randint(1, each - 1)
    total = friends * each
    lines: list[str] = []
    share = step(lines, f"{total}/{friends}", total // friends)
    left = step(lines, f"{share}-{give}", share - give)
    q = (f"{total} {items} are split equally among {friends} children. Each child then gives {give} "
         f"{items} to {name}'s little brother. How many {items} does each child have now?")
    return (name, item, friends, each, give), q, finish(lines, left), left


def times_as_many(rng: random.Random):
    a, b, c = rng.sample(NAMES, 3)
    item, items = rng.choice(ITEMS)
    n, k, fewer = rng.randint(3, 250), rng.randint(2, 9), rng.randint(1, 200)
    lines: list[str] = []
    second = step(lines, f"{n}*{k}", n * k)
    third = step(lines, f"{second}-{fewer}", second - fewer)
    pair = step(lines, f"{n}+{second}", n + second)
    total = step(lines, f"{pair}+{third}", pair + third)
    q = (f"{a} has {n} {items}. {b} has {k} times as many {items} as {a}. {c} has {fewer} fewer {items} "
         f"than {b}. How many {items} do they have altogether?")
    return (a, b, c, item, n, k, fewer), q, finish(lines, total), total


def trip_distance(rng: random.Random):
    name = rng.choice(NAMES)
    s1, h1, s2, h2 = rng.randint(20, 120), rng.randint(2, 9), rng.randint(20, 120), rng.randint(2, 9)
    lines: list[str] = []
    d1 = step(lines, f"{s1}*{h1}", s1 * h1)
    d2 = step(lines, f"{s2}*{h2}", s2 * h2)
    total = step(lines, f"{d1}+{d2}", d1 + d2)
    q = (f"{name} drives at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours. "
         f"How many km does {name} drive in total?")
    return (name, s1, h1, s2, h2), q, finish(lines, total), total


def packed_boxes(rng: random.Random):
    name, (item, items), (box, boxes) = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    (n_boxes, per_box), sold = factors(rng, 99), rng.randint(1, 500)
    lines: list[str] = []
    total = step(lines, f"{n_boxes}*{per_box}", n_boxes * per_box)
    left = step(lines, f"{total}-{sold}", total - sold)
    q = (f"{name} packs {n_boxes} {boxes} with {per_box} {items} in each {box}. "
         f"{name} sells {sold} {items}. How many {items} are left?")
    return (name, item, box, n_boxes, per_box, sold), q, finish(lines, left), left


def weekly_earnings(rng: random.Random):
    name = rng.choice(NAMES)
    rate, hours, days, bonus = rng.randint(8, 30), rng.randint(2, 8), rng.randint(2, 7), rng.randint(5, 500)
    lines: list[str] = []
    per_day = step(lines, f"{rate}*{hours}", rate * hours)
    week = step(lines, f"{per_day}*{days}", per_day * days)
    total = step(lines, f"{week}+{bonus}", week + bonus)
    q = (f"{name} earns ${rate} per hour and works {hours} hours a day for {days} days. "
         f"{name} also gets a ${bonus} bonus. How many dollars does {name} earn that week?")
    return (name, rate, hours, days, bonus), q, finish(lines, total), total


def class_groups(rng: random.Random):
    classes, students, group = rng.randint(2, 9), rng.randint(10, 40), rng.choice([2, 3, 4, 5, 6])
    absent = rng.randint(0, 20)
    present_total = classes * students - absent
    if present_total % group:
        raise Reject
    lines: list[str] = []
    total = step(lines, f"{classes}*{students}", classes * students)
    present = step(lines, f"{total}-{absent}", total - absent)
    groups = step(lines, f"{present}/{group}", present // group)
    q = (f"A school has {classes} classes with {students} students each. {absent} students are absent today. "
         f"The students who came are put into groups of {group}. How many groups are there?")
    return (classes, students, group, absent), q, finish(lines, groups), groups


TEMPLATES: dict[str, Callable] = {f.__name__: f for f in (
    buy_one, buy_with_change, two_purchases, reading_left, savings, share_equally, share_then_give,
    times_as_many, trip_distance, packed_boxes, weekly_earnings, class_groups)}

HELDOUT_BUCKETS = 10  # one bucket in ten of instance hashes is held out


def draw(rng: random.Random) -> Problem:
    while True:
        name = rng.choice(list(TEMPLATES))
        try:
            values, question, solution, answer = TEMPLATES[name](rng)
        except (Reject, ValueError):
            continue
        return Problem(name, values, question, solution, answer)


def is_heldout(problem: Problem) -> bool:
    return int(problem.instance_key[:8], 16) % HELDOUT_BUCKETS == 0


def generate(n: int, split: str, seed: int) -> list[Problem]:
    """``n`` distinct problems of one split ("train" or "heldout"), the same for the same seed."""
    return distinct(n, split, f"{split}-{seed}", draw)


def distinct(n: int, split: str, stream: str, draw_one: Callable[[random.Random], Problem]) -> list[Problem]:
    """``n`` problems of one split with distinct instances, drawn from the random stream named ``stream``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train or heldout, not {split!r}")
    rng = random.Random(stream)
    seen: set[str] = set()
    problems = []
    while len(problems) < n:
        problem = draw_one(rng)
        if is_heldout(problem) != (split == "heldout") or problem.instance_key in seen:
            continue
        seen.add(problem.instance_key)
        problems.append(problem)
    return problems
