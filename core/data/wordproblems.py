"""Math word problems in many surface forms, seeded, for training the SmolLM2 diffusion model.

core.data.mathgen writes 12 fixed templates; people write free-form problems, so this module writes
more than 40 scenario families (shopping, recipes, travel, ages, farm animals, water tanks, ...),
each with a few step variants, and varies the surface as people do: 100+ names with their
pronouns, 100+ objects, several verbs, units and currencies, small numbers as words ("three",
"a dozen", "twice", "half"), facts in varied order, merged, or folded into an "If ..., how ...?"
question, question phrasings from "How many ...?" to "Work out ...", and in about one problem in
seven a distractor sentence whose number no step uses.

Solutions keep mathgen's format: one ``a<op>b=c`` line per step on whole numbers in [0, 9999],
each operand a number of the question (digits, or a word of NUMBER_WORDS) or an earlier result,
then ``#### N``. A problem's instance is its wording (the solution follows from it), so the
held-out split, a fixed slice of wording hashes, shares no question with train.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from typing import Callable

from core.data import mathgen
from core.data.mathgen import Reject, finish, step

SMALL_WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
               "sixteen seventeen eighteen nineteen twenty").split()
# Every word a question may use for a number a step needs ("half" and "twice" stand for 2 and so on).
NUMBER_WORDS = {word: value for value, word in enumerate(SMALL_WORDS, start=1)}
NUMBER_WORDS.update(dozen=12, twice=2, double=2, half=2, triple=3, third=3, quarter=4, percent=100)

SHE = ("Ava Chloe Elena Grace Isla Kemi Maya Olga Rosa Uma Wen Ximena Zoe Amara Aisha Fatima Priya Ananya Mei "
       "Yuki Sakura Hana Nadia Sofia Lucia Camila Valentina Isabella Emma Olivia Mia Harper Nora Leah Hannah "
       "Sarah Amina Zainab Ngozi Chiamaka Thandiwe Zuri Ayesha Leila Yasmin Ingrid Freya Astrid Kavya Meera "
       "Linh Tala Marisol Paloma Siobhan Aoife Naomi Beatriz Ines").split()
HE = ("Ben Dev Farid Hiro Jonas Liam Noah Pablo Tariq Victor Yusuf Omar Ahmed Ibrahim Kwame Kofi Chidi Tunde "
      "Jamal Malik Andre Mateo Diego Santiago Luis Carlos Javier Rafael Arjun Rohan Vikram Ravi Kenji Takumi "
      "Wei Hao Minh Bao Lars Sven Erik Nikolai Dmitri Ivan Piotr Tomasz Luca Marco Giovanni Pierre Hugo Felix "
      "Oliver James Henry Samuel Daniel Ethan Caleb Hamza Ali").split()
THEY = "Alex Sam Jordan Riley Quinn Kai Robin Sasha Avery Rowan Emerson Jesse Charlie Skyler".split()
NAMES = [(n, "she") for n in SHE] + [(n, "he") for n in HE] + [(n, "they") for n in THEY]
NAME_SET = {n for n, _ in NAMES}
PRONOUNS = {"he": ("he", "him", "his"), "she": ("she", "her", "her"), "they": ("they", "them", "their")}


@dataclass(frozen=True)
class Person:
    name: str
    pronoun: str

    @property
    def he(self) -> str:
        return PRONOUNS[self.pronoun][0]

    @property
    def him(self) -> str:
        return PRONOUNS[self.pronoun][1]

    @property
    def his(self) -> str:
        return PRONOUNS[self.pronoun][2]


@dataclass(frozen=True)
class Thing:
    one: str
    many: str


def plural(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def things(spec: str) -> list[Thing]:
    """Comma-separated nouns; an irregular plural follows a bar, as in "loaf of bread|loaves of bread"."""
    out = []
    for item in spec.split(","):
        one, _, many = item.strip().partition("|")
        out.append(Thing(one, many or plural(one)))
    return out


OBJECTS = {
    "fruit": things("apple, orange, pear, peach, plum, banana, mango, lemon, lime, apricot, cherry, strawberry, "
                    "fig, kiwi, nectarine, tangerine, coconut, pineapple, papaya, guava, pomegranate, avocado"),
    "baked": things("cupcake, cookie, muffin, brownie, pie, loaf of bread|loaves of bread, bagel, croissant, "
                    "donut, cinnamon roll, scone, tart, pretzel, biscuit, empanada, samosa"),
    "supplies": things("pencil, pen, eraser, marker, crayon, notebook, ruler, glue stick, folder, highlighter, "
                       "binder, paintbrush, sketchbook, pencil case, calculator"),
    "toys": things("marble, toy car, yo-yo, puzzle, doll, kite, ball, action figure, teddy bear, toy robot, "
                   "jump rope, spinning top, board game, toy train, rubber duck"),
    "collect": things("stamp, trading card, baseball card, sticker, coin, seashell, postcard, badge, bottle cap, "
                      "pin, comic book, rock, feather, keychain, button"),
    "goods": things("candle, potted plant, towel, mug, plate, bowl, shirt, pair of socks|pairs of socks, hat, "
                    "scarf, lamp, pillow, battery, light bulb, water bottle, backpack, umbrella, phone case, "
                    "bracelet, necklace, book, magazine, flashlight, blanket"),
    "groceries": things("egg, carrot, potato|potatoes, tomato|tomatoes, onion, cucumber, watermelon, pumpkin, "
                        "can of soup|cans of soup, jar of honey|jars of honey, bottle of juice|bottles of juice, "
                        "bag of rice|bags of rice, carton of milk|cartons of milk, sandwich, taco, burrito, "
                        "box of cereal|boxes of cereal, yogurt cup"),
    "flowers": things("rose, tulip, daisy, sunflower, lily, orchid, marigold, carnation"),
}
THING_KIND = {t: kind for kind, ts in OBJECTS.items() for t in ts}
PRICE_CAPS = {"fruit": 9, "baked": 12, "supplies": 20, "toys": 50, "collect": 15, "goods": 80, "groceries": 15,
              "flowers": 12}  # the dearest unit price that reads as believable
SHOP = ("goods", "supplies", "toys", "groceries", "baked", "fruit", "flowers")
SHARE = ("fruit", "baked", "toys", "collect", "supplies")
CONTAINERS = things("box, bag, crate, basket, jar, carton, tray, bin, pack")
PLACES = ("the store", "the market", "the mall", "a corner shop", "the supermarket", "a local shop",
          "the school fair", "an online store", "a street market", "the shopping center")
BUY = ("buys", "gets", "purchases", "picks up", "orders")
CURRENCIES = (("$", "dollars"), ("$", "dollars"), ("$", "dollars"), ("€", "euros"), ("£", "pounds"))
DISTANCE = ("km", "kilometers", "miles")
VOLUME = ("liters", "gallons")

# How a question may be asked besides a direct question: around an embedded one or a noun phrase.
EMBED_FRAMES = ("Find out {}.", "Work out {}.", "Determine {}.", "Figure out {}.", "Can you work out {}?",
                "Please calculate {}.", "Find {}.", "Calculate {}.")
NP_FRAMES = ("What is {}?", "Find {}.", "Calculate {}.", "Compute {}.", "Determine {}.", "Give {}.")
LEAD_INS = ("So ", "So, ", "Now, ", "Then ")
CONNECTORS = {"Then", "Later", "Next", "After", "Afterwards", "Finally", "Meanwhile", "On", "In", "At", "By"}
PRONOUN = re.compile(r"\b(he|she|they|him|her|them|his|their)\b", re.IGNORECASE)
NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+|\d+")
DISTRACTOR_RATE = 0.15


def base_verb(verb: str) -> str:
    """The form that goes with "they": buys -> buy, has -> have, also watches -> also watch."""
    words = verb.split()
    i = 1 if words[0] == "also" else 0
    word = words[i]
    irregular = {"has": "have", "is": "are", "was": "were", "does": "do", "goes": "go"}
    if word in irregular:
        word = irregular[word]
    elif word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith(("ches", "shes", "sses", "xes")):
        word = word[:-2]
    elif word.endswith("s"):
        word = word[:-1]
    words[i] = word
    return " ".join(words)


def article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def lower_first(text: str) -> str:
    """Lower the first letter to continue a sentence, unless the text starts with a name."""
    first = text.split()[0].removesuffix("'s").strip(",")
    return text if first in NAME_SET else text[0].lower() + text[1:]


def foldable(fact: str) -> bool:
    """Whether a fact reads well as "If <fact>, ...": a plain clause, no connector in front."""
    return "," not in fact and fact.split()[0] not in CONNECTORS


class Scene:
    """One problem being written: the values drawn, the facts stated, the question and the worked steps."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.values: list = []
        self.facts: list[str] = []
        self.lines: list[str] = []
        self.people: list[Person] = []
        self.taken: list[Thing] = []
        self.asking: tuple = ((), None, None)
        self.sign, self.cur = rng.choice(CURRENCIES)

    # Drawing. Names, objects and numbers are the problem's values; wording choices are not.
    def int(self, lo: int, hi: int) -> int:
        value = self.rng.randint(lo, hi)
        self.values.append(value)
        return value

    def pick(self, options):
        value = self.rng.choice(options)
        self.values.append(value.one if isinstance(value, Thing) else value)
        return value

    def person(self) -> Person:
        while (p := Person(*self.rng.choice(NAMES))) in self.people:
            pass
        self.people.append(p)
        self.values.append(p.name)
        return p

    def thing(self, *kinds: str) -> Thing:
        t = self.rng.choice([t for k in kinds for t in OBJECTS[k] if t not in self.taken])
        self.taken.append(t)
        self.values.append(t.one)
        return t

    def price(self, t: Thing) -> int:
        return self.int(2, PRICE_CAPS[THING_KIND[t]])

    def divisor(self, n: int, lo: int, hi: int) -> int:
        options = [d for d in range(lo, hi + 1) if n % d == 0]
        if not options:
            raise Reject
        return self.pick(options)

    def say(self, *frames: str) -> str:
        return self.rng.choice(frames)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # Writing numbers and people the ways people do.
    def digits(self, value: int) -> str:
        return f"{value:,}" if value >= 1000 and self.chance(0.3) else str(value)

    def n(self, value: int) -> str:
        """A count: digits, or now and then the word ("seven", "a dozen")."""
        if 1 <= value <= 20 and self.chance(0.25):
            return "a dozen" if value == 12 and self.chance(0.5) else SMALL_WORDS[value - 1]
        return self.digits(value)

    def money(self, value: int) -> str:
        amount = self.digits(value)
        return f"{self.sign}{amount}" if self.chance(0.65) else f"{amount} {self.cur}"

    def times(self, k: int) -> str:
        """The multiplier in "<k> as many": "twice", "three times", "5 times"."""
        return "twice" if k == 2 and self.chance(0.6) else f"{self.n(k)} times"

    def named(self, p: Person) -> bool:
        """Whether to name a person again: half the time, and always when a pronoun could mean another."""
        return self.chance(0.5) or sum(q.pronoun == p.pronoun for q in self.people) > 1

    def who(self, p: Person, verb: str) -> str:
        """The subject of a later sentence: the name again, or the pronoun with its verb agreeing."""
        if self.named(p):
            return f"{p.name} {verb}"
        return f"{p.he} {base_verb(verb) if p.pronoun == 'they' else verb}"

    def whose(self, p: Person) -> str:
        return f"{p.name}'s" if self.named(p) else p.his

    def then(self) -> str:
        return self.say("", "", "Then ", "After that, ", "Later, ", "Next, ")

    # Stating facts, asking, and working the steps.
    def fact(self, *frames: str) -> None:
        self.facts.append(self.say(*frames))

    def ask(self, *questions: str, emb: str | None = None, np: str | None = None) -> None:
        """Direct questions (no "?"), and optionally the same as an embedded question and as a noun phrase."""
        self.asking = (questions, emb, np)

    def add(self, a: int, b: int) -> int:
        return step(self.lines, f"{a}+{b}", a + b)

    def sub(self, a: int, b: int) -> int:
        return step(self.lines, f"{a}-{b}", a - b)

    def mul(self, a: int, b: int) -> int:
        return step(self.lines, f"{a}*{b}", a * b)

    def div(self, a: int, b: int) -> int:
        if b == 0 or a % b:
            raise Reject
        return step(self.lines, f"{a}/{b}", a // b)

    def question(self) -> str:
        ask, facts, movable = self.render_ask()
        if self.chance(DISTRACTOR_RATE):
            topics = " ".join(facts + [ask]).replace("%", " percent")
            facts.insert(self.rng.randint(0, len(facts)), self.distractor(topics))
        sentences = [f + "." for f in self.merge(facts)]
        # Now and then a plain question comes first, when it names everyone it speaks of.
        if movable and not PRONOUN.search(ask) and sentences and self.chance(0.2):
            sentences.insert(0, ask)
        else:
            sentences.append(ask)
        text = " ".join(s[0].upper() + s[1:] for s in sentences)
        if any(int(x.replace(",", "")) > mathgen.LIMIT for x in NUMBER.findall(text)):
            raise Reject
        return text

    def render_ask(self) -> tuple[str, list[str], bool]:
        """The asking sentence, the facts left to state, and whether the ask may open the problem."""
        questions, emb, np = self.asking
        facts, roll = list(self.facts), self.rng.random()
        if emb and roll < 0.15:
            return self.say(*EMBED_FRAMES).format(emb), facts, False
        if np and roll < 0.3:
            return self.say(*NP_FRAMES).format(np), facts, False
        q = self.say(*questions)
        if roll < 0.45 and facts and foldable(facts[-1]):
            return f"If {lower_first(facts[-1])}, {lower_first(q)}?", facts[:-1], False
        if roll < 0.55:
            return self.say(*LEAD_INS) + lower_first(q) + "?", facts, False
        return q + "?", facts, True

    def merge(self, facts: list[str]) -> list[str]:
        """Join some neighbouring facts into one sentence, so sentence length varies."""
        out: list[str] = []
        for f in facts:
            if out and self.chance(0.15):
                out[-1] = f"{out[-1]}{self.say(', and ', ' and ')}{lower_first(f)}"
            else:
                out.append(f)
        return out

    def distractor(self, text: str) -> str:
        """A sentence with a number no step uses, on a topic the problem does not touch."""
        p = self.people[0] if self.people else None
        options = [(topic, say) for topic, needs_person, say in DISTRACTORS
                   if topic not in text and (p or not needs_person)]
        return self.say(*options)[1](self, p)


DISTRACTORS: list[tuple[str, bool, Callable[[Scene, Person | None], str]]] = [
    ("years", True, lambda s, p: f"{p.name} is {s.int(6, 16)} years old"),
    ("degrees", False, lambda s, p: f"It is {s.int(10, 35)} degrees outside"),
    ("favorite", True, lambda s, p: f"{p.name}'s favorite number is {s.int(3, 99)}"),
    ("house", True, lambda s, p: f"{p.name} lives at house number {s.int(10, 999)}"),
    ("grade", True, lambda s, p: f"{p.name} is in grade {s.int(2, 8)}"),
    ("cousins", True, lambda s, p: f"{p.name} has {s.int(2, 9)} cousins"),
    ("years", False, lambda s, p: f"The shop nearby opened {s.int(3, 40)} years ago"),
    ("o'clock", False, lambda s, p: f"The day starts at {s.int(6, 9)} o'clock"),
    ("jersey", True, lambda s, p: f"{p.name}'s soccer jersey has the number {s.int(2, 99)}"),
    ("percent", True, lambda s, p: f"{p.name}'s phone battery is at {s.int(15, 95)} percent"),
    ("gears", True, lambda s, p: f"{p.name}'s bike has {s.int(3, 21)} gears"),
    ("street", False, lambda s, p: f"The street has {s.int(12, 80)} houses on it"),
]

FAMILIES: dict[str, Callable[[Scene], None]] = {}


def family(fn: Callable[[Scene], None]) -> Callable[[Scene], None]:
    FAMILIES[fn.__name__] = fn
    return fn


# --- Money -------------------------------------------------------------------------------------

@family
def shopping(s: Scene):
    p, a = s.person(), s.thing(*SHOP)
    n, price = s.int(2, 15), s.price(a)
    count, cost, place, buys = s.n(n), s.money(price), s.say(*PLACES), s.say(*BUY)
    s.fact(f"{p.name} {buys} {count} {a.many} at {place}", f"At {place}, {p.name} {buys} {count} {a.many}")
    s.fact(f"Each {a.one} costs {cost}", f"The {a.many} cost {cost} each", f"One {a.one} is {cost}",
           f"They are {cost} apiece")
    spent = s.mul(n, price)
    if s.chance(0.4):
        b = s.thing(*SHOP)
        m, price2 = s.int(2, 12), s.price(b)
        s.fact(f"{s.who(p, 'also buys')} {s.n(m)} {b.many} that cost {s.money(price2)} each",
               f"{s.who(p, 'adds')} {s.n(m)} {b.many} at {s.money(price2)} each to the basket")
        spent = s.add(spent, s.mul(m, price2))
    s.ask(f"How much does {p.name} spend", f"How much money does {p.name} spend in total",
          f"How many {s.cur} does {p.name} pay altogether", "What is the total cost",
          emb=f"how much {p.name} spends", np=f"the total amount {p.name} pays, in {s.cur}")


@family
def change(s: Scene):
    p, a = s.person(), s.thing(*SHOP)
    n, price = s.int(2, 12), s.price(a)
    count, cost = s.n(n), s.money(price)
    s.fact(f"{p.name} {s.say(*BUY)} {count} {a.many} for {cost} each",
           f"{p.name} wants {count} {a.many}, and each one costs {cost}")
    total = s.mul(n, price)
    roll = s.rng.random()
    if roll < 0.3:
        extra = s.int(2, 25)
        s.fact(f"{s.who(p, 'also pays')} {s.money(extra)} for a gift bag",
               f"There is also a {s.sign}{extra} delivery charge")
        total = s.add(total, extra)
    elif roll < 0.6:
        b = s.thing(*SHOP)
        m, price2 = s.int(2, 8), s.price(b)
        s.fact(f"{s.who(p, 'also gets')} {s.n(m)} {b.many} at {s.money(price2)} each",
               f"{s.n(m)} {b.many} at {s.money(price2)} apiece go in the basket too")
        total = s.add(total, s.mul(m, price2))
    bills = [b for b in (20, 50, 100, 200, 500) if b >= total]
    if not bills:
        raise Reject
    paid = s.pick(bills[:2])
    s.fact(f"{s.who(p, 'pays')} with {s.money(paid)}", f"{s.who(p, 'hands')} the cashier {s.money(paid)}")
    s.sub(paid, total)
    s.ask(f"How much change does {p.name} get back", f"How much change should {p.name} receive",
          f"How many {s.cur} in change does {p.name} get",
          emb=f"how much change {p.name} gets", np=f"the change {p.name} receives")


@family
def unit_price(s: Scene):
    p, a = s.person(), s.thing(*SHOP)
    n, price = s.int(2, 12), s.price(a)
    total = n * price
    if s.chance(0.5):
        fee = s.int(2, 20)
        s.fact(f"{p.name} pays {s.money(total + fee)} for {s.n(n)} {a.many}",
               f"{p.name} spends {s.money(total + fee)} on {s.n(n)} {a.many}")
        s.fact(f"That includes a {s.sign}{fee} delivery fee", f"{s.money(fee)} of that is for shipping")
        total = s.sub(total + fee, fee)
    else:
        s.fact(f"{p.name} pays {s.money(total)} for {s.n(n)} {a.many}",
               f"{s.n(n)} {a.many} cost {p.name} {s.money(total)} in all")
    s.div(total, n)
    s.ask(f"How much does one {a.one} cost", f"What is the price of each {a.one}",
          f"How many {s.cur} does each {a.one} cost",
          emb=f"how much one {a.one} costs", np=f"the price of a single {a.one}")


@family
def coupon(s: Scene):
    p, a = s.person(), s.thing(*SHOP)
    n, price = s.int(2, 10), s.price(a)
    off = s.int(2, n * price // 2)
    s.fact(f"{p.name} orders {s.n(n)} {a.many} online at {s.money(price)} each",
           f"{p.name} puts {s.n(n)} {a.many} in an online cart; each costs {s.money(price)}")
    cost = s.mul(n, price)
    if s.chance(0.5):
        ship = s.int(3, 15)
        s.fact(f"Shipping costs {s.money(ship)}", f"Delivery adds {s.money(ship)} to the order")
        cost = s.add(cost, ship)
    s.fact(f"{s.who(p, 'has')} a coupon for {s.money(off)} off the whole order",
           f"A coupon takes {s.money(off)} off the total")
    s.sub(cost, off)
    s.ask(f"How much does {p.name} pay", "What is the final price of the order",
          f"How many {s.cur} does {p.name} pay in the end",
          emb=f"how much {p.name} pays in the end", np=f"the amount {p.name} pays after the coupon")


@family
def percent(s: Scene):
    pct = s.pick((5, 10, 15, 20, 25, 30, 40, 50, 75))
    unit = 100 // math.gcd(pct, 100)  # the least price whose share is whole
    price = unit * s.int(1, 500 // unit)
    rate = s.say(f"{pct}%", f"{pct} percent")
    cut = s.div(s.mul(price, pct), 100)
    if s.chance(0.5):
        a = s.thing("goods", "toys")
        s.fact(f"{article(a.one)} {a.one} costs {s.money(price)}",
               f"The price of {article(a.one)} {a.one} is {s.money(price)}")
        s.fact(f"This week it is {rate} off", f"It goes on sale for {rate} off",
               f"The shop gives a {rate} discount on it")
        s.sub(price, cut)
        s.ask(f"What is the sale price of the {a.one}", f"How much does the {a.one} cost on sale",
              emb=f"how much the {a.one} costs after the discount", np=f"the sale price of the {a.one}")
    else:
        p = s.person()
        s.fact(f"{p.name}'s dinner costs {s.money(price)}", f"The bill for {p.name}'s meal is {s.money(price)}")
        s.fact(f"{s.who(p, 'adds')} a {rate} tip", f"{s.who(p, 'leaves')} a tip of {rate}")
        s.add(price, cut)
        s.ask(f"How much does {p.name} pay in all", f"What does the meal cost {p.name} with the tip",
              emb=f"how much {p.name} pays including the tip", np=f"the total {p.name} pays")


@family
def bake_sale(s: Scene):
    p, a, b = s.person(), s.thing("baked"), s.thing("baked")
    n, pa, m, pb = s.int(5, 60), s.int(2, 6), s.int(5, 60), s.int(2, 8)
    s.fact(f"At the bake sale, {p.name} sells {s.n(n)} {a.many} for {s.money(pa)} each",
           f"{p.name} sold {s.n(n)} {a.many} at {s.money(pa)} apiece at the school bake sale")
    s.fact(f"{s.who(p, 'also sells')} {s.n(m)} {b.many} for {s.money(pb)} each",
           f"{s.n(m)} {b.many} were sold too, at {s.money(pb)} each")
    earned = s.add(s.mul(n, pa), s.mul(m, pb))
    if s.chance(0.5):
        cost = s.int(5, earned - 1)
        s.fact(f"The ingredients cost {s.money(cost)}", f"{s.who(p, 'spent')} {s.money(cost)} on ingredients")
        s.sub(earned, cost)
        s.ask(f"How much profit does {p.name} make", "How much money is left after paying for ingredients",
              emb=f"how much profit {p.name} makes", np=f"{p.name}'s profit in {s.cur}")
    else:
        s.ask(f"How much money does {p.name} raise", f"How many {s.cur} does the bake sale bring in",
              emb=f"how much money {p.name} collects", np="the total money raised")


@family
def saving(s: Scene):
    p = s.person()
    goal_item = s.say("a bike", "a video game", "a guitar", "a tablet", "a pair of skates", "a telescope")
    start, weekly = s.int(0, 300), s.int(3, 60)
    if s.chance(0.5):
        weeks = s.int(2, 20)
        goal = start + weekly * weeks
        s.fact(f"{p.name} wants {goal_item} that costs {s.money(goal)}",
               f"{goal_item.capitalize()} costs {s.money(goal)}, and {p.name} wants it")
        s.fact(f"{p.name} has saved {s.money(start)} so far and saves {s.money(weekly)} every week",
               f"{p.name} has {s.money(start)} and puts away {s.money(weekly)} each week")
        s.div(s.sub(goal, start), weekly)
        s.ask(f"How many weeks will it take {p.name} to have enough", f"How many weeks does {p.name} need to save",
              emb=f"how many weeks {p.name} must save", np=f"the number of weeks {p.name} needs")
        return
    weeks = s.int(2, 12)
    s.fact(f"{p.name} has {s.money(start)} in a piggy bank", f"{p.name} starts with {s.money(start)} saved")
    s.fact(f"{s.who(p, 'saves')} {s.money(weekly)} a week for {s.n(weeks)} weeks",
           f"For {s.n(weeks)} weeks, {s.who(p, 'adds')} {s.money(weekly)} each week")
    total = s.add(start, s.mul(weekly, weeks))
    if s.chance(0.5):
        spend = s.int(2, total)
        s.fact(f"{s.then()}{s.who(p, 'buys')} {goal_item} for {s.money(spend)}")
        s.sub(total, spend)
        s.ask(f"How much money does {p.name} have left", f"How many {s.cur} are left in the piggy bank",
              emb=f"how much money {p.name} has left", np=f"the amount {p.name} has left")
    else:
        s.ask(f"How much money does {p.name} have now", f"How many {s.cur} has {p.name} saved in total",
              emb=f"how much {p.name} has saved", np=f"the total {p.name} has saved")


@family
def wages(s: Scene):
    p = s.person()
    job = s.say("at a cafe", "babysitting", "mowing lawns", "at the library", "tutoring", "at a car wash",
                "walking dogs", "at a bakery")
    rate, hours = s.int(8, 30), s.int(2, 10)
    per = s.say("per hour", "an hour", "for every hour", "each hour")
    s.fact(f"{p.name} earns {s.money(rate)} {per} working {job}",
           f"{p.name} works {job} and is paid {s.money(rate)} {per}")
    if s.chance(0.4):
        s.fact(f"{s.who(p, 'works')} {s.n(hours)} hours this week", f"This week {s.who(p, 'works')} {s.n(hours)} hours")
        pay = s.mul(rate, hours)
    else:
        days = s.int(2, 6)
        s.fact(f"{s.who(p, 'works')} {s.n(hours)} hours a day for {s.n(days)} days",
               f"Over {s.n(days)} days, {s.who(p, 'works')} {s.n(hours)} hours each day")
        pay = s.mul(s.mul(rate, hours), days)
        if s.chance(0.5):
            tips = s.int(5, 150)
            s.fact(f"{s.who(p, 'also gets')} {s.money(tips)} in tips",
                   f"On top of that, tips add up to {s.money(tips)}")
            pay = s.add(pay, tips)
            if s.chance(0.5):
                spend = s.int(2, pay)
                s.fact(f"{s.then()}{s.who(p, 'spends')} {s.money(spend)} on new shoes")
                s.sub(pay, spend)
                s.ask(f"How much of that money does {p.name} have left", emb=f"how much {p.name} has left",
                      np=f"the money {p.name} keeps")
                return
    s.ask(f"How much does {p.name} earn", f"How much money does {p.name} make in all",
          f"How many {s.cur} does {p.name} earn altogether",
          emb=f"how much {p.name} earns", np=f"{p.name}'s total earnings in {s.cur}")


@family
def allowance(s: Scene):
    p = s.person()
    if s.chance(0.4):
        days = ("Monday", "Tuesday", "Wednesday", "Thursday")
        tips = [s.int(5, 120) for _ in range(s.int(3, 4))]
        amounts = [f"{s.money(t)} on {d}" for t, d in zip(tips, days)]
        s.fact(f"{p.name} works at a restaurant and gets {', '.join(amounts[:-1])} and {amounts[-1]} in tips",
               f"In tips, {p.name} makes {', '.join(amounts[:-1])} and {amounts[-1]}")
        total = tips[0]
        for t in tips[1:]:
            total = s.add(total, t)
        s.ask(f"How much does {p.name} get in tips over these days", f"What is {p.name}'s total in tips",
              emb=f"how much {p.name} made in tips", np=f"the sum of {p.name}'s tips")
        return
    weekly, weeks = s.int(3, 40), s.int(2, 12)
    s.fact(f"{p.name} gets an allowance of {s.money(weekly)} every week",
           f"Every week, {p.name}'s parents give {p.him} {s.money(weekly)}")
    s.fact(f"{s.who(p, 'saves')} all of it for {s.n(weeks)} weeks", f"{p.name} saves it for {s.n(weeks)} weeks")
    total = s.mul(weekly, weeks)
    if s.chance(0.4):
        gift = s.int(5, 100)
        s.fact(f"{s.whose(p)} grandmother also gives {p.him} {s.money(gift)}")
        total = s.add(total, gift)
    spend = s.int(1, total)
    s.fact(f"{s.then()}{s.who(p, 'spends')} {s.money(spend)} on a gift")
    s.sub(total, spend)
    s.ask(f"How much does {p.name} have left", f"How many {s.cur} does {p.name} keep",
          emb=f"how much money {p.name} has left", np=f"the money {p.name} has left")


@family
def coins(s: Scene):
    p = s.person()
    v1, v2 = s.pick((5, 10, 20)), s.pick((25, 50))
    a, b = s.int(3, 60), s.int(2, 40)
    s.fact(f"{p.name}'s piggy bank has {s.n(a)} coins worth {v1} cents each and {s.n(b)} coins worth {v2} cents each",
           f"{p.name} has {s.n(a)} {v1}-cent coins and {s.n(b)} {v2}-cent coins")
    total = s.add(s.mul(a, v1), s.mul(b, v2))
    if s.chance(0.4):
        spent = s.int(5, total)
        s.fact(f"{s.who(p, 'spends')} {spent} cents on gum")
        s.sub(total, spent)
        s.ask(f"How many cents does {p.name} have left", emb="how many cents are left", np="the cents left over")
    else:
        s.ask(f"How many cents does {p.name} have", "How much money, in cents, is in the piggy bank",
              emb=f"how many cents {p.name} has", np="the value of the coins in cents")


# --- Food and cooking --------------------------------------------------------------------------

INGREDIENTS = ("cups of flour", "eggs", "grams of sugar", "tablespoons of butter", "cups of milk",
               "teaspoons of vanilla", "grams of chocolate", "cups of oats", "bananas", "spoons of honey")
DISHES = ("pancakes", "cookies", "muffins", "servings of soup", "bowls of porridge", "servings of stew", "waffles")


@family
def recipe(s: Scene):
    p = s.person()
    ing, dish = s.pick(INGREDIENTS), s.pick(DISHES)
    k, q = s.int(2, 12), s.int(2, 40)
    s.fact(f"A recipe for {s.n(k)} {dish} uses {s.n(q)} {ing}",
           f"To make {s.n(k)} {dish}, a recipe needs {s.n(q)} {ing}")
    if s.chance(0.4):
        scale = s.pick(("double", "triple"))
        s.fact(f"{p.name} wants to {scale} the recipe", f"{p.name} decides to {scale} it")
        s.mul(q, {"double": 2, "triple": 3}[scale])
    else:
        m = s.int(2, 9)
        s.fact(f"{p.name} wants to make {s.n(k * m)} {dish}", f"{p.name} is cooking for {s.n(k * m)} {dish}")
        need = s.mul(q, s.div(k * m, k))
        if s.chance(0.5):
            have = s.int(1, need - 1)
            s.fact(f"{s.who(p, 'has')} {s.n(have)} {ing} at home already")
            s.sub(need, have)
            s.ask(f"How many more {ing} does {p.name} need to buy", emb=f"how many more {ing} {p.name} must buy",
                  np=f"the number of {ing} still to buy")
            return
    s.ask(f"How many {ing} does {p.name} need", f"How many {ing} should {p.name} use",
          emb=f"how many {ing} {p.name} needs", np=f"the number of {ing} {p.name} needs")


@family
def baking(s: Scene):
    p, a = s.person(), s.thing("baked")
    n, batches = s.int(6, 36), s.int(2, 8)
    batch = s.say("batch", "tray")
    s.fact(f"{p.name} bakes {s.n(batches)} {plural(batch)} of {a.many}",
           f"{p.name} makes {s.n(batches)} {plural(batch)} of {a.many}")
    s.fact(f"Each {batch} has {s.n(n)} {a.many}", f"There are {s.n(n)} {a.many} on every {batch}",
           f"One {batch} holds {s.n(n)} {a.many}")
    total = s.mul(n, batches)
    if s.chance(0.3):
        s.ask(f"How many {a.many} does {p.name} bake", f"How many {a.many} are there in all",
              emb=f"how many {a.many} {p.name} bakes", np=f"the number of {a.many} {p.name} bakes")
        return
    box = s.int(2, 12)
    eaten = total % box + box * s.int(0, 2) or box  # what is left fills whole boxes
    s.fact(f"{s.then()}{s.who(p, 'eats')} {s.n(eaten)} of them", f"{s.n(eaten)} of them get burned",
           f"{s.who(p, 'gives')} {s.n(eaten)} to the neighbors")
    left = s.sub(total, eaten)
    if s.chance(0.5):
        s.fact(f"{s.who(p, 'packs')} the rest into boxes of {s.n(box)}",
               f"The rest go into boxes that hold {s.n(box)} each")
        s.div(left, box)
        s.ask(f"How many boxes does {p.name} fill", "How many boxes are needed",
              emb="how many boxes are filled", np="the number of full boxes")
    else:
        s.ask(f"How many {a.many} are left", f"How many {a.many} does {p.name} have now",
              emb=f"how many {a.many} remain", np=f"the number of {a.many} left")


@family
def dozens(s: Scene):
    p, a = s.person(), s.pick(("eggs", "roses", "donuts", "cookies", "bagels", "pencils", "muffins"))
    d = s.int(2, 9)
    s.fact(f"{p.name} buys {s.n(d)} dozen {a}", f"{p.name} orders {s.n(d)} dozen {a} for a party")
    total = s.mul(d, 12)
    if s.chance(0.6):
        used = s.int(2, total - 1)
        s.fact(f"{s.then()}{s.who(p, 'uses')} {s.n(used)} of them", f"{s.n(used)} of the {a} are given away")
        s.sub(total, used)
        s.ask(f"How many {a} are left", f"How many {a} does {p.name} still have",
              emb=f"how many {a} {p.name} has left", np=f"the number of {a} left")
    else:
        s.ask(f"How many {a} does {p.name} buy", f"How many {a} is that",
              emb=f"how many {a} {p.name} has", np=f"the number of {a}")


@family
def party(s: Scene):
    p = s.person()
    guests = s.int(4, 40)
    roll = s.rng.random()
    if roll < 0.4:
        slices, per = s.int(2, 4), s.pick((6, 8, 10, 12))
        s.fact(f"{p.name} is having a party with {s.n(guests)} guests",
               f"{s.n(guests)} guests are coming to {p.name}'s party")
        s.fact(f"Each guest will eat {s.n(slices)} slices of pizza", f"Everyone eats {s.n(slices)} slices")
        s.fact(f"A pizza is cut into {s.n(per)} slices", f"Each pizza has {s.n(per)} slices")
        s.div(s.mul(guests, slices), per)
        s.ask(f"How many pizzas should {p.name} order", "How many pizzas are needed",
              emb=f"how many pizzas {p.name} needs", np="the number of pizzas to order")
    elif roll < 0.7:
        a = s.thing("toys", "collect", "baked")
        each, spare = s.int(2, 8), s.int(2, 20) if s.chance(0.6) else 0
        s.fact(f"{p.name} makes goodie bags for {s.n(guests)} guests",
               f"There are {s.n(guests)} guests at {p.name}'s party")
        s.fact(f"Each bag gets {s.n(each)} {a.many}", f"{s.who(p, 'puts')} {s.n(each)} {a.many} in every bag")
        need = s.mul(guests, each)
        if spare:
            s.fact(f"{s.who(p, 'has')} {s.n(spare)} {a.many} left over")
            s.add(need, spare)
            s.ask(f"How many {a.many} did {p.name} have at the start", emb=f"how many {a.many} {p.name} had")
        else:
            s.ask(f"How many {a.many} does {p.name} need", emb=f"how many {a.many} go in the bags")
    else:
        more, left = s.int(2, 30), s.int(2, 15)
        s.fact(f"{s.n(guests)} guests arrive at {p.name}'s party at first",
               f"At first, {s.n(guests)} guests come to the party")
        s.fact(f"Later {s.n(more)} more guests arrive", f"Then {s.n(more)} more people show up")
        s.fact(f"Before dinner, {s.n(left)} guests go home", f"After a while {s.n(left)} of them leave")
        s.sub(s.add(guests, more), left)
        s.ask("How many guests are at the party now", "How many guests stay for dinner",
              emb="how many guests are left", np="the number of guests still there")


@family
def leftovers(s: Scene):
    p, q = s.person(), s.person()
    a = s.thing("fruit", "baked", "toys", "collect")
    x, eat, give = s.int(10, 200), s.int(1, 20), s.int(1, 40)
    s.fact(f"{p.name} has {s.n(x)} {a.many}", f"There are {s.n(x)} {a.many} in {p.name}'s bag")
    eats = "eats" if a in OBJECTS["fruit"] + OBJECTS["baked"] else "loses"
    s.fact(f"{s.who(p, eats)} {s.n(eat)} of them", f"{s.who(p, eats)} {s.n(eat)}")
    s.fact(f"{s.then()}{s.who(p, 'gives')} {s.n(give)} to {q.name}", f"{q.name} gets {s.n(give)} from {p.name}")
    left = s.sub(s.sub(x, eat), give)
    if s.chance(0.3):
        more = s.int(2, 50)
        s.fact(f"{s.then()}{s.who(p, 'buys')} {s.n(more)} more")
        left = s.add(left, more)
    s.ask(f"How many {a.many} does {p.name} have now", f"How many {a.many} are left",
          emb=f"how many {a.many} {p.name} has left", np=f"the number of {a.many} {p.name} has left")


@family
def fraction_given(s: Scene):
    p, q, r = s.person(), s.person(), s.person()
    a = s.thing(*SHARE)
    part = s.pick(("half", "a third", "a quarter"))
    d = {"half": 2, "a third": 3, "a quarter": 4}[part]
    x = d * s.int(3, 100)
    s.fact(f"{p.name} has {s.n(x)} {a.many}", f"{p.name} collected {s.n(x)} {a.many}")
    s.fact(f"{s.who(p, 'gives')} {part} of them to {q.name}", f"{q.name} gets {part} of them")
    given = s.div(x, d)
    rest = s.sub(x, given)
    if s.chance(0.6):
        k = s.int(1, rest)
        s.fact(f"{s.then()}{s.who(p, 'gives')} {s.n(k)} to {r.name}", f"{r.name} gets {s.n(k)} of the rest")
        s.sub(rest, k)
    s.ask(f"How many {a.many} does {p.name} keep", f"How many {a.many} does {p.name} have left",
          emb=f"how many {a.many} {p.name} keeps", np=f"the number of {a.many} {p.name} still has")


# --- Sharing, packing, arranging ---------------------------------------------------------------

@family
def sharing(s: Scene):
    p, a = s.person(), s.thing(*SHARE)
    k, each = s.int(2, 12), s.int(2, 60)
    group = s.say("friends", "classmates", "cousins", "teammates", "children")
    if s.chance(0.4):
        keep = s.int(1, 30)
        s.fact(f"{p.name} has {s.n(k * each + keep)} {a.many}", f"{p.name} owns {s.n(k * each + keep)} {a.many}")
        s.fact(f"{p.name} keeps {s.n(keep)} and shares the rest equally among {s.n(k)} {group}",
               f"After keeping {s.n(keep)}, {s.who(p, 'splits')} the rest evenly between {s.n(k)} {group}")
        s.div(s.sub(k * each + keep, keep), k)
    else:
        s.fact(f"{p.name} shares {s.n(k * each)} {a.many} equally among {s.n(k)} {group}",
               f"{s.n(k)} {group} split {s.n(k * each)} {a.many} evenly",
               f"{p.name} divides {s.n(k * each)} {a.many} equally between {s.n(k)} {group}")
        share = s.div(k * each, k)
        if s.chance(0.4):
            lose = s.int(1, share - 1)
            s.fact(f"{s.then()}each of them gives {s.n(lose)} away")
            s.sub(share, lose)
            s.ask(f"How many {a.many} does each one have now", emb=f"how many {a.many} each has now",
                  np=f"the number of {a.many} each one has left")
            return
    s.ask(f"How many {a.many} does each one get", f"How many {a.many} does each of the {group} receive",
          emb=f"how many {a.many} each gets", np=f"the number of {a.many} each one gets")


@family
def packing(s: Scene):
    p, a, box = s.person(), s.thing(*SHARE), s.pick(CONTAINERS)
    per, boxes = s.int(3, 24), s.int(2, 40)
    roll = s.rng.random()
    if roll < 0.35:
        s.fact(f"{p.name} packs {s.n(per * boxes)} {a.many} into {box.many} of {s.n(per)}",
               f"{s.n(per * boxes)} {a.many} need to go into {box.many}, with {s.n(per)} in each {box.one}")
        s.div(per * boxes, per)
        s.ask(f"How many {box.many} does {p.name} fill", f"How many {box.many} are needed",
              emb=f"how many {box.many} are needed", np=f"the number of {box.many} used")
    elif roll < 0.7:
        loose = s.int(2, per - 1)
        s.fact(f"{p.name} has {s.n(boxes)} {box.many} with {s.n(per)} {a.many} in each",
               f"There are {s.n(boxes)} full {box.many} of {a.many}, each holding {s.n(per)}")
        s.fact(f"There are also {s.n(loose)} loose {a.many}", f"{s.n(loose)} more {a.many} are not in any {box.one}")
        s.add(s.mul(boxes, per), loose)
        s.ask(f"How many {a.many} are there altogether", f"How many {a.many} does {p.name} have in total",
              emb=f"how many {a.many} there are", np=f"the total number of {a.many}")
    else:
        done = s.int(1, boxes - 1) * per
        s.fact(f"{p.name} has {s.n(per * boxes)} {a.many} to pack",
               f"There are {s.n(per * boxes)} {a.many} to be packed")
        s.fact(f"{s.who(p, 'has')} already packed {s.n(done)} of them", f"{s.n(done)} are packed already")
        s.fact(f"Each {box.one} holds {s.n(per)}", f"{s.n(per)} fit in one {box.one}")
        s.div(s.sub(per * boxes, done), per)
        s.ask(f"How many more {box.many} does {p.name} need", f"How many {box.many} are still needed",
              emb=f"how many more {box.many} are needed", np=f"the number of {box.many} still needed")


ROWS = (("chairs", "hall"), ("desks", "classroom"), ("plants", "greenhouse"), ("parking spaces", "parking lot"),
        ("seats", "theater"), ("trees", "orchard"), ("lockers", "hallway"), ("tents", "campsite"))


@family
def rows_columns(s: Scene):
    item, place = s.pick(ROWS)
    rows, cols = s.int(2, 30), s.int(2, 25)
    s.fact(f"The {place} has {s.n(rows)} rows of {item} with {s.n(cols)} {item} in each row",
           f"{item.capitalize()} in the {place} are set out in {s.n(rows)} rows of {s.n(cols)}",
           f"In the {place} there are {s.n(rows)} rows, and each row has {s.n(cols)} {item}")
    total = s.mul(rows, cols)
    if s.chance(0.6):
        taken = s.int(2, total)
        s.fact(f"{s.n(taken)} of the {item} are in use", f"{s.n(taken)} {item} are already taken")
        s.sub(total, taken)
        s.ask(f"How many {item} are free", f"How many {item} are not being used",
              emb=f"how many {item} are free", np=f"the number of free {item}")
    else:
        s.ask(f"How many {item} are in the {place}", f"How many {item} are there in all",
              emb=f"how many {item} the {place} has", np=f"the number of {item} in the {place}")


PLANTS = things("carrot, onion, beet, radish, tulip, sunflower, tomato plant, pepper plant, cabbage, "
                "strawberry plant, lettuce, bean plant")


@family
def garden(s: Scene):
    p, plant = s.person(), s.pick(PLANTS)
    beds, rows, per = s.int(2, 9), s.int(2, 8), s.int(3, 15)
    s.fact(f"{p.name} has {s.n(beds)} garden beds", f"There are {s.n(beds)} beds in {p.name}'s garden")
    if s.chance(0.5):
        s.fact(f"Each bed has {s.n(rows)} rows with {s.n(per)} {plant.many} in each row",
               f"{s.who(p, 'plants')} {s.n(rows)} rows of {s.n(per)} {plant.many} in every bed")
        total = s.mul(beds, s.mul(rows, per))
    else:
        s.fact(f"{s.who(p, 'plants')} {s.n(per)} {plant.many} in each bed", f"Every bed holds {s.n(per)} {plant.many}")
        total = s.mul(beds, per)
    if s.chance(0.5):
        lost = s.int(2, total)
        s.fact(f"{s.then()}rabbits eat {s.n(lost)} of them", f"{s.n(lost)} of the {plant.many} do not grow")
        s.sub(total, lost)
        s.ask(f"How many {plant.many} are left", f"How many {plant.many} does {p.name} still have",
              emb=f"how many {plant.many} are left", np=f"the number of {plant.many} left")
    else:
        s.ask(f"How many {plant.many} does {p.name} plant", f"How many {plant.many} are in the garden",
              emb=f"how many {plant.many} {p.name} plants", np=f"the number of {plant.many} in the garden")


@family
def blocks(s: Scene):
    p = s.person()
    kind = s.say("blocks", "LEGO bricks", "wooden blocks", "magnetic tiles", "cups")
    if s.chance(0.4):
        per, n = s.int(4, 40), s.int(2, 20)
        s.fact(f"{p.name} has {s.n(per * n)} {kind}", f"A box holds {s.n(per * n)} {kind}, all {p.name}'s")
        s.fact(f"Each tower uses {s.n(per)} {kind}", f"{s.who(p, 'needs')} {s.n(per)} {kind} for one tower")
        s.div(per * n, per)
        s.ask(f"How many towers can {p.name} build", emb=f"how many towers {p.name} can build",
              np="the number of towers that can be built")
        return
    layers, per = s.int(2, 15), s.int(2, 12)
    s.fact(f"{p.name} builds a tower with {s.n(layers)} layers of {s.n(per)} {kind}",
           f"{p.name}'s tower has {s.n(layers)} layers, and each layer has {s.n(per)} {kind}")
    used = s.mul(layers, per)
    if s.chance(0.5):
        wall = s.int(5, 80)
        s.fact(f"{s.then()}{s.who(p, 'builds')} a wall with {s.n(wall)} {kind}")
        used = s.add(used, wall)
    if s.chance(0.5):
        have = s.int(used, used + 200)
        s.fact(f"{p.name} started with {s.n(have)} {kind}")
        s.sub(have, used)
        s.ask(f"How many {kind} does {p.name} have left", emb=f"how many {kind} are left", np=f"the {kind} left over")
    else:
        s.ask(f"How many {kind} does {p.name} use", emb=f"how many {kind} {p.name} uses",
              np=f"the number of {kind} used")


# --- School, library, sports, games ------------------------------------------------------------

@family
def classroom(s: Scene):
    p, a = s.person(), s.thing("supplies")
    students, each = s.int(8, 35), s.int(2, 6)
    if s.chance(0.5):
        s.fact(f"{p.name} teaches a class of {s.n(students)} students",
               f"There are {s.n(students)} students in {p.name}'s class")
    else:
        classes, per_class = s.int(2, 5), s.int(8, 30)
        s.fact(f"{p.name} teaches {s.n(classes)} classes of {s.n(per_class)} students",
               f"{p.name} has {s.n(classes)} classes, each with {s.n(per_class)} students")
        students = s.mul(classes, per_class)
    s.fact(f"Each student needs {s.n(each)} {a.many}", f"Every student gets {s.n(each)} {a.many}")
    need = s.mul(students, each)
    if s.chance(0.5):
        per = s.divisor(need, 2, 24)
        s.fact(f"{a.many.capitalize()} come in packs of {s.n(per)}", f"One pack has {s.n(per)} {a.many}")
        s.div(need, per)
        s.ask(f"How many packs does {p.name} need", "How many packs must be bought",
              emb=f"how many packs {p.name} needs", np="the number of packs needed")
    else:
        spare = s.int(2, 30)
        s.fact(f"{s.who(p, 'wants')} {s.n(spare)} extra {a.many} too",
               f"{s.who(p, 'also keeps')} {s.n(spare)} spare ones")
        s.add(need, spare)
        s.ask(f"How many {a.many} does {p.name} need in all", emb=f"how many {a.many} {p.name} needs",
              np=f"the total number of {a.many}")


@family
def school_trip(s: Scene):
    classes, per = s.int(2, 8), s.int(15, 32)
    vehicle = s.say("bus", "van", "boat")
    s.fact(f"{s.n(classes)} classes of {s.n(per)} students go on a school trip",
           f"A school sends {s.n(classes)} classes on a trip, with {s.n(per)} students in each")
    people = s.mul(classes, per)
    if s.chance(0.5):
        teachers = s.int(2, 12)
        s.fact(f"{s.n(teachers)} teachers go too", f"{s.n(teachers)} teachers come along")
        people = s.add(people, teachers)
    seats = s.divisor(people, 5, min(60, people // 2))
    s.fact(f"Each {vehicle} holds {s.n(seats)} people", f"A {vehicle} has {s.n(seats)} seats")
    s.div(people, seats)
    vehicles = plural(vehicle)
    s.ask(f"How many {vehicles} are needed", f"How many {vehicles} does the school need",
          emb=f"how many {vehicles} are needed", np=f"the number of {vehicles} needed")


@family
def library(s: Scene):
    start, out, back = s.int(100, 3000), s.int(5, 90), s.int(3, 80)
    s.fact(f"A library has {s.digits(start)} books", f"There are {s.digits(start)} books in the town library")
    s.fact(f"On Monday, {s.n(out)} books are borrowed", f"People check out {s.n(out)} books")
    s.fact(f"{s.then()}{s.n(back)} books are returned", f"{s.n(back)} books come back later that week")
    total = s.add(s.sub(start, out), back)
    if s.chance(0.3):
        shelf = s.divisor(total, 10, 60)
        s.fact(f"The books are put on shelves of {s.n(shelf)}", f"Each shelf holds {s.n(shelf)} books")
        s.div(total, shelf)
        s.ask("How many shelves are filled", emb="how many shelves the books fill", np="the number of shelves used")
    else:
        s.ask("How many books are in the library now", "How many books does the library have at the end",
              emb="how many books the library has now", np="the number of books on hand")


@family
def sports(s: Scene):
    p = s.person()
    if s.chance(0.5):
        twos, threes = s.int(2, 15), s.int(2, 9)
        s.fact(f"In a basketball game, {p.name} makes {s.n(twos)} two-point shots and {s.n(threes)} three-point shots",
               f"{p.name} scores {s.n(twos)} two-pointers and {s.n(threes)} three-pointers in a game")
        points = s.add(s.mul(twos, 2), s.mul(threes, 3))
        if s.chance(0.5):
            free = s.int(2, 10)
            s.fact(f"{s.who(p, 'also makes')} {s.n(free)} free throws worth one point each")
            points = s.add(points, free)
        s.ask(f"How many points does {p.name} score", f"How many points does {p.name} score in the game",
              emb=f"how many points {p.name} scores", np=f"{p.name}'s total points")
        return
    team = s.say("The Lions", "The Hawks", "The Tigers", "The Sharks", "The Rockets")
    td, fg = s.int(2, 7), s.int(2, 6)
    worth_td, worth_fg = s.pick((6, 7)), 3
    s.fact(f"{team} score {s.n(td)} touchdowns worth {s.n(worth_td)} points each",
           f"{team} get {s.n(td)} touchdowns at {s.n(worth_td)} points apiece")
    s.fact(f"They also kick {s.n(fg)} field goals worth {s.n(worth_fg)} points each")
    points = s.add(s.mul(td, worth_td), s.mul(fg, worth_fg))
    if s.chance(0.5):
        other = s.int(2, points - 1)
        s.fact(f"The other team scores {s.n(other)} points")
        s.sub(points, other)
        s.ask(f"By how many points do {lower_first(team)} win", emb=f"how many points {lower_first(team)} win by",
              np="the winning margin")
    else:
        s.ask(f"How many points do {lower_first(team)} score", emb=f"how many points {lower_first(team)} score",
              np=f"the total points of {lower_first(team)}")


@family
def quiz_points(s: Scene):
    p = s.person()
    right, worth = s.int(2, 40), s.int(2, 10)
    s.fact(f"In a quiz, each right answer is worth {s.n(worth)} points",
           f"A trivia game gives {s.n(worth)} points for every correct answer")
    s.fact(f"{p.name} gets {s.n(right)} answers right", f"{p.name} answers {s.n(right)} questions correctly")
    points = s.mul(right, worth)
    if s.chance(0.5):
        penalty = s.int(2, points)
        s.fact(f"{s.who(p, 'loses')} {s.n(penalty)} points for wrong answers")
        s.sub(points, penalty)
    s.ask(f"How many points does {p.name} end up with", f"What is {p.name}'s final score",
          emb=f"how many points {p.name} has", np=f"{p.name}'s score")


@family
def games(s: Scene):
    team = s.say("A soccer team", "The school chess club", "A hockey team", "Our volleyball team", "A baseball team")
    roll = s.rng.random()
    if roll < 0.4:
        played = s.int(5, 60)
        lost = s.int(2, played - 1)
        s.fact(f"{team} played {s.n(played)} games this season",
               f"This season {lower_first(team)} played {s.n(played)} games")
        s.fact(f"They lost {s.n(lost)} of them", f"{s.n(lost)} of those games were losses")
        won = s.sub(played, lost)
        if won > 2 and s.chance(0.4):
            tied = s.int(2, won - 1)
            s.fact(f"{s.n(tied)} games ended in a tie")
            s.sub(won, tied)
        s.ask("How many games did they win", "How many games did the team win",
              emb="how many games the team won", np="the number of wins")
    elif roll < 0.7:
        wins, draws = s.int(2, 30), s.int(2, 15)
        s.fact(f"In a league, a win is worth {s.n(3)} points and a draw is worth one point")
        s.fact(f"{team} won {s.n(wins)} games and drew {s.n(draws)}",
               f"{team} has {s.n(wins)} wins and {s.n(draws)} draws")
        s.add(s.mul(wins, 3), draws)
        s.ask("How many points does the team have", emb="how many points the team has", np="the team's points")
    else:
        p, q = s.person(), s.person()
        theirs = s.int(2, 40)
        s.fact(f"{p.name} won {s.n(2 * theirs)} games of chess this year",
               f"This year {p.name} won {s.n(2 * theirs)} chess games")
        s.fact(f"That is twice as many as {q.name} won", f"{q.name} won half as many")
        s.div(2 * theirs, 2)
        s.ask(f"How many games did {q.name} win", emb=f"how many games {q.name} won", np=f"{q.name}'s number of wins")


@family
def collecting(s: Scene):
    p, q, a = s.person(), s.person(), s.thing("collect")
    have, weekly, weeks = s.int(5, 400), s.int(2, 30), s.int(2, 12)
    verb = s.say("collects", "finds", "gathers", "adds")
    s.fact(f"{p.name} has {s.n(have)} {a.many} in a collection", f"{p.name}'s collection has {s.n(have)} {a.many}")
    s.fact(f"Every week, {s.who(p, verb)} {s.n(weekly)} more", f"{s.who(p, verb)} {s.n(weekly)} new {a.many} each week")
    s.fact(f"This goes on for {s.n(weeks)} weeks", f"{s.who(p, 'keeps')} this up for {s.n(weeks)} weeks")
    total = s.add(have, s.mul(weekly, weeks))
    if s.chance(0.5):
        give = s.int(1, total)
        s.fact(f"{s.then()}{s.who(p, 'gives')} {s.n(give)} {a.many} to {q.name}",
               f"{q.name} gets {s.n(give)} of them as a gift")
        s.sub(total, give)
    s.ask(f"How many {a.many} does {p.name} have now", f"How many {a.many} are in {p.name}'s collection at the end",
          emb=f"how many {a.many} {p.name} ends up with", np=f"the size of {p.name}'s collection")


@family
def fruit_picking(s: Scene):
    p, q, a = s.person(), s.person(), s.thing("fruit")
    if s.chance(0.5):
        per_tree, trees = s.int(3, 40), s.int(2, 12)
        s.fact(f"{p.name} picks {s.n(per_tree)} {a.many} from each of {s.n(trees)} trees",
               f"There are {s.n(trees)} trees, and {p.name} picks {s.n(per_tree)} {a.many} from every tree")
        mine = s.mul(per_tree, trees)
        if s.chance(0.5):
            more = s.int(2, 50)
            s.fact(f"{q.name} picks {s.n(more)} more {a.many} than {p.name}",
                   f"{q.name} picks {s.n(more)} more than that")
            s.add(mine, s.add(mine, more))
            s.ask(f"How many {a.many} do {p.name} and {q.name} pick altogether",
                  f"How many {a.many} do they pick in total",
                  emb=f"how many {a.many} the two pick together", np=f"the total number of {a.many} picked")
        else:
            s.ask(f"How many {a.many} does {p.name} pick", emb=f"how many {a.many} {p.name} picks",
                  np=f"the number of {a.many} {p.name} picks")
        return
    pickers, each = s.int(2, 9), s.int(5, 60)
    basket = s.divisor(pickers * each, 4, 20)
    s.fact(f"{s.n(pickers)} friends go to an orchard, and each picks {s.n(each)} {a.many}",
           f"At the farm, {s.n(pickers)} children pick {s.n(each)} {a.many} each")
    s.fact(f"They put the {a.many} in baskets of {s.n(basket)}", f"A basket holds {s.n(basket)} {a.many}")
    s.div(s.mul(pickers, each), basket)
    s.ask("How many baskets do they fill", "How many baskets are filled",
          emb="how many baskets they fill", np="the number of full baskets")


@family
def combined(s: Scene):
    people = [s.person() for _ in range(3)]
    a = s.thing(*SHARE)
    counts = [s.int(2, 300) for _ in people]
    verb, base = s.pick((("collected", "collect"), ("found", "find"), ("brought", "bring"), ("made", "make")))
    s.fact(", ".join(f"{p.name} {verb} {s.n(c)}" for p, c in zip(people[:-1], counts))
           + f" and {people[-1].name} {verb} {s.n(counts[-1])} {a.many}")
    total = s.add(s.add(counts[0], counts[1]), counts[2])
    if s.chance(0.3):
        s.fact(f"The {s.say('three', '3')} of them share the {a.many} equally")
        s.div(total, 3)
        s.ask(f"How many {a.many} does each get", emb=f"how many {a.many} each gets", np="each one's share")
        return
    s.ask(f"How many {a.many} did they {base} altogether", f"How many {a.many} are there in all",
          f"How many {a.many} did they {base} in total",
          emb=f"how many {a.many} they have together", np=f"the total number of {a.many}")


@family
def compare_more(s: Scene):
    p, q, a = s.person(), s.person(), s.thing(*SHARE)
    x, y = s.int(5, 500), s.int(5, 500)
    if x == y:
        raise Reject
    if s.chance(0.5):
        s.fact(f"{p.name} has {s.n(x)} {a.many}", f"{p.name} owns {s.n(x)} {a.many}")
        s.fact(f"{q.name} has {s.n(y)} {a.many}", f"{q.name} has {s.n(y)}")
        more, less = (p, q) if x > y else (q, p)
        s.sub(max(x, y), min(x, y))
        s.ask(f"How many more {a.many} does {more.name} have than {less.name}",
              f"How many fewer {a.many} does {less.name} have than {more.name}",
              emb=f"how many more {a.many} {more.name} has", np=f"the difference between their {a.many}")
        return
    d = s.int(2, x - 1)
    s.fact(f"{p.name} has {s.n(x)} {a.many}", f"{p.name} has collected {s.n(x)} {a.many}")
    s.fact(f"{q.name} has {s.n(d)} fewer {a.many} than {p.name}", f"{q.name} has {s.n(d)} fewer than {p.name}")
    s.add(x, s.sub(x, d))
    s.ask(f"How many {a.many} do they have together", f"How many {a.many} do {p.name} and {q.name} have in all",
          emb=f"how many {a.many} the two have", np=f"their total number of {a.many}")


@family
def times_as_many(s: Scene):
    p, q, r = s.person(), s.person(), s.person()
    a = s.thing(*SHARE)
    x, k = s.int(2, 200), s.int(2, 6)
    s.fact(f"{p.name} has {s.n(x)} {a.many}", f"{p.name} owns {s.n(x)} {a.many}")
    s.fact(f"{q.name} has {s.times(k)} as many {a.many} as {p.name}",
           f"{q.name} has {s.times(k)} as many as {p.name}")
    y = s.mul(x, k)
    if s.chance(0.4):
        s.ask(f"How many {a.many} does {q.name} have", emb=f"how many {a.many} {q.name} has",
              np=f"the number of {a.many} {q.name} has")
        return
    if s.chance(0.5):
        fewer = s.int(2, y)
        s.fact(f"{r.name} has {s.n(fewer)} fewer {a.many} than {q.name}")
        z = s.sub(y, fewer)
        s.add(s.add(x, y), z)
        s.ask(f"How many {a.many} do the three of them have altogether", "How many do they have in total",
              emb=f"how many {a.many} the three have", np=f"the total number of {a.many}")
        return
    s.add(x, y)
    s.ask(f"How many {a.many} do {p.name} and {q.name} have together", f"How many {a.many} do they have in all",
          emb=f"how many {a.many} they have together", np=f"their combined number of {a.many}")


@family
def half_as_many(s: Scene):
    p, q, a = s.person(), s.person(), s.thing(*SHARE)
    x = 2 * s.int(2, 250)
    s.fact(f"{p.name} has {s.n(x)} {a.many}", f"{p.name} has a bag of {s.n(x)} {a.many}")
    s.fact(f"{q.name} has half as many {a.many} as {p.name}", f"{q.name} has half as many")
    y = s.div(x, 2)
    if s.chance(0.5):
        s.add(x, y)
        s.ask(f"How many {a.many} do they have in total", emb=f"how many {a.many} they have", np="their total")
    else:
        more = s.int(1, 60)
        s.fact(f"{s.then()}{q.name} gets {s.n(more)} more")
        s.add(y, more)
        s.ask(f"How many {a.many} does {q.name} have now", emb=f"how many {a.many} {q.name} has now",
              np=f"{q.name}'s number of {a.many}")


@family
def ages(s: Scene):
    p, q = s.person(), s.person()
    x = s.int(3, 40)
    roll = s.rng.random()
    if roll < 0.3:
        k, rel = s.int(2, 4), s.say("mother", "father", "grandmother", "grandfather", "aunt", "uncle")
        s.fact(f"{p.name} is {s.n(x)} years old", f"{p.name}'s age is {s.n(x)}")
        s.fact(f"{p.name}'s {rel} is {s.times(k)} as old as {p.name}", f"{s.whose(p)} {rel} is {s.times(k)} as old")
        older = s.mul(x, k)
        if s.chance(0.5):
            s.ask(f"How old is {p.name}'s {rel}", emb=f"how old {p.name}'s {rel} is", np=f"the {rel}'s age")
        else:
            later = s.int(2, 20)
            s.add(older, later)
            s.ask(f"How old will {p.name}'s {rel} be in {s.n(later)} years",
                  emb=f"how old the {rel} will be in {later} years")
        return
    d = s.int(2, 15)
    s.fact(f"{p.name} is {s.n(x)} years old", f"{p.name} is {s.n(x)}")
    s.fact(f"{q.name} is {s.n(d)} years older than {p.name}", f"{q.name} is {s.n(d)} years older")
    y = s.add(x, d)
    if roll < 0.6:
        r, e = s.person(), s.int(2, y - 1)
        s.fact(f"{r.name} is {s.n(e)} years younger than {q.name}", f"{r.name} is {s.n(e)} years younger than {q.name}")
        s.sub(y, e)
        s.ask(f"How old is {r.name}", emb=f"how old {r.name} is", np=f"{r.name}'s age")
    else:
        s.add(x, y)
        s.ask("What is the sum of their ages", f"How old are {p.name} and {q.name} together",
              emb="what their ages add up to", np=f"the sum of {p.name}'s and {q.name}'s ages")


@family
def heights(s: Scene):
    p, q, r = s.person(), s.person(), s.person()
    unit, lo, hi = s.pick((("cm", 60, 190), ("centimeters", 60, 190), ("inches", 25, 75)))
    h, d, e = s.int(lo, hi), s.int(2, 20), s.int(2, 20)
    s.fact(f"{p.name} is {h} {unit} tall", f"{p.name}'s height is {h} {unit}")
    s.fact(f"{q.name} is {s.n(d)} {unit} taller than {p.name}", f"{q.name} is {s.n(d)} {unit} taller")
    y = s.add(h, d)
    if s.chance(0.5):
        s.fact(f"{r.name} is {s.n(e)} {unit} shorter than {q.name}")
        s.sub(y, e)
        s.ask(f"How tall is {r.name}", emb=f"how tall {r.name} is", np=f"{r.name}'s height")
    else:
        s.ask(f"How tall is {q.name}", f"What is {q.name}'s height in {unit}",
              emb=f"how tall {q.name} is", np=f"{q.name}'s height")


SINGULAR = {"meters": "meter", "feet": "foot", "centimeters": "centimeter", "inches": "inch"}


@family
def cutting(s: Scene):
    p = s.person()
    stuff = s.say("rope", "ribbon", "wooden board", "roll of fabric", "pipe", "length of wire")
    unit = s.say(*SINGULAR)
    piece, pieces = s.int(2, 25), s.int(2, 40)
    if s.chance(0.5):
        waste = s.int(2, 30)
        s.fact(f"{p.name} has a {stuff} that is {s.digits(piece * pieces + waste)} {unit} long",
               f"A {stuff} is {s.digits(piece * pieces + waste)} {unit} long")
        s.fact(f"{s.who(p, 'cuts')} off {s.n(waste)} {unit} first", f"{s.n(waste)} {unit} of it is damaged and cut off")
        s.fact(f"{s.then()}{s.who(p, 'cuts')} the rest into pieces {s.n(piece)} {unit} long")
        s.div(s.sub(piece * pieces + waste, waste), piece)
    else:
        s.fact(f"{p.name} cuts a {s.digits(piece * pieces)}-{SINGULAR[unit]} {stuff} "
               f"into pieces that are {s.n(piece)} {unit} long",
               f"A {stuff} {s.digits(piece * pieces)} {unit} long is cut into {s.n(piece)}-{unit} pieces")
        s.div(piece * pieces, piece)
    s.ask("How many pieces are there", f"How many pieces does {p.name} get",
          emb="how many pieces there are", np="the number of pieces")


# --- Travel, time, rates -----------------------------------------------------------------------

MODES = (("drives", 30, 110), ("cycles", 8, 25), ("walks", 3, 6), ("rides the train", 60, 150), ("runs", 6, 14),
         ("sails", 5, 30), ("rides a scooter", 10, 30))


@family
def travel_distance(s: Scene):
    p = s.person()
    verb, lo, hi = s.pick(MODES)
    unit = s.pick(DISTANCE)
    v, t = s.int(lo, hi), s.int(2, 9)
    rate = s.say(f"at {v} {unit} per hour", f"at a speed of {v} {unit} an hour", f"at {v} {unit} each hour")
    roll = s.rng.random()
    s.fact(f"{p.name} {verb} {rate} for {s.n(t)} hours", f"For {s.n(t)} hours, {p.name} {verb} {rate}")
    d = s.mul(v, t)
    if roll < 0.35:
        s.ask(f"How far does {p.name} go", f"How many {unit} does {p.name} cover",
              emb=f"how far {p.name} travels", np=f"the distance {p.name} covers")
    elif roll < 0.7:
        v2, t2 = s.int(lo, hi), s.int(2, 6)
        s.fact(f"{s.then()}{s.who(p, verb)} at {v2} {unit} per hour for {s.n(t2)} more hours")
        d = s.add(d, s.mul(v2, t2))
        if s.chance(0.4):
            trip = d + s.int(1, d)
            s.fact(f"The whole trip is {s.digits(trip)} {unit}")
            s.sub(trip, d)
            s.ask(f"How many {unit} are left to go", emb=f"how far {p.name} still has to go", np="the distance left")
            return
        s.ask(f"How many {unit} does {p.name} travel in total", f"What total distance does {p.name} cover",
              emb=f"how far {p.name} goes in all", np=f"the total distance in {unit}")
    else:
        trip = d + s.int(1, d)
        s.fact(f"The whole trip is {s.digits(trip)} {unit}", f"{p.name}'s trip is {s.digits(trip)} {unit} long")
        s.sub(trip, d)
        s.ask(f"How many {unit} does {p.name} still have to go", f"How far is {p.name} from the end of the trip",
              emb=f"how far {p.name} still has to go", np="the distance left")


@family
def travel_time(s: Scene):
    p = s.person()
    verb, lo, hi = s.pick(MODES)
    unit = s.pick(DISTANCE)
    place = s.say("the lake", "the city", "the airport", "a campsite", "the beach", "the museum")
    v, t = s.int(lo, hi), s.int(1, 8)
    if s.chance(0.5):
        s.fact(f"{p.name} {verb} {s.digits(v * t)} {unit} to {place} at {v} {unit} per hour",
               f"{place.capitalize()} is {s.digits(v * t)} {unit} away, and {p.name} {verb} there "
               f"at {v} {unit} an hour")
        s.div(v * t, v)
        s.ask("How many hours does the trip take", f"How long does it take {p.name} to get there, in hours",
              emb="how many hours the trip takes", np="the travel time in hours")
        return
    if (v * t) % 2:
        raise Reject
    half = v * t // 2
    s.fact(f"{p.name} {verb} {s.digits(half)} {unit} to {place} and {s.digits(half)} {unit} back",
           f"The way to {place} is {s.digits(half)} {unit}, and {p.name} comes back the same {s.digits(half)} {unit}")
    s.fact(f"The speed is {v} {unit} per hour the whole time", f"{s.who(p, 'keeps')} a speed of {v} {unit} an hour")
    s.div(s.add(half, half), v)
    s.ask("How many hours does the round trip take", emb="how many hours the round trip takes",
          np="the total number of hours on the road")


ACTIVITIES = ("practices the piano", "plays chess", "studies math", "jogs", "does yoga", "paints", "reads",
              "plays video games", "walks the dog", "practices the violin", "swims")


@family
def time_spent(s: Scene):
    p = s.person()
    act = s.pick(ACTIVITIES)
    if s.chance(0.5):
        a, b = s.int(10, 90), s.int(2, 9)
        s.fact(f"On Monday, {p.name} {act} for {a} minutes", f"{p.name} {act} for {a} minutes on Monday")
        s.fact(f"On Tuesday, {s.who(p, 'spends')} twice as long on it", "On Tuesday it is twice as long")
        tue = s.mul(a, 2)
        if s.chance(0.5):
            s.fact(f"On Wednesday, it is {b} minutes less than on Tuesday")
            wed = s.sub(tue, b)
            s.add(s.add(a, tue), wed)
            s.ask(f"How many minutes does {p.name} spend over the three days",
                  emb=f"how many minutes {p.name} spends in all", np="the total number of minutes over the three days")
        else:
            s.add(a, tue)
            s.ask(f"How many minutes does {p.name} spend on the two days",
                  emb=f"how many minutes {p.name} spends on both days", np="the total number of minutes for both days")
        return
    per, days = s.int(10, 120), s.int(2, 14)
    s.fact(f"{p.name} {act} for {per} minutes a day", f"Every day, {p.name} {act} for {per} minutes")
    s.fact(f"{s.who(p, 'does')} this for {s.n(days)} days", f"This goes on for {s.n(days)} days")
    total = s.mul(per, days)
    if s.chance(0.4):
        extra = s.int(10, 200)
        s.fact(f"On the last weekend {s.who(p, 'spends')} another {extra} minutes on it")
        total = s.add(total, extra)
    s.ask(f"How many minutes does {p.name} spend in all", f"What is the total time {p.name} spends, in minutes",
          emb=f"how many minutes {p.name} spends", np="the total number of minutes")


@family
def reading(s: Scene):
    p = s.person()
    book = s.say("book", "novel", "comic book", "textbook", "mystery novel")
    roll = s.rng.random()
    if roll < 0.3:
        per, days = s.int(5, 60), s.int(2, 30)
        s.fact(f"{p.name}'s {book} has {s.digits(per * days)} pages", f"A {book} has {s.digits(per * days)} pages")
        s.fact(f"{s.who(p, 'reads')} {per} pages every day", f"{p.name} reads {per} pages a day")
        s.div(per * days, per)
        s.ask(f"How many days does it take {p.name} to finish the {book}",
              emb=f"how many days {p.name} needs", np=f"the number of days {p.name} needs")
        return
    if roll < 0.65:
        per, days = s.int(5, 80), s.int(2, 12)
        pages = per * days + s.int(1, 500)
        s.fact(f"A {book} has {s.digits(pages)} pages", f"{p.name} borrows a {book} with {s.digits(pages)} pages")
        s.fact(f"{s.who(p, 'reads')} {per} pages a day for {s.n(days)} days",
               f"For {s.n(days)} days, {s.who(p, 'reads')} {per} pages each day")
        s.sub(pages, s.mul(per, days))
    else:
        first = s.int(5, 100)
        s.fact(f"{p.name} reads {first} pages of a {book} on Saturday", f"On Saturday, {p.name} reads {first} pages")
        s.fact(f"On Sunday, {s.who(p, 'reads')} twice as many pages", "On Sunday it is twice as many pages")
        both = s.add(first, s.mul(first, 2))
        pages = both + s.int(1, 400)
        s.fact(f"The {book} has {s.digits(pages)} pages", f"The whole {book} is {s.digits(pages)} pages long")
        s.sub(pages, both)
    s.ask("How many pages are left to read", f"How many pages does {p.name} still have to read",
          emb="how many pages are left", np="the number of pages left")


@family
def laps(s: Scene):
    p = s.person()
    track = s.int(2, 8) * 50
    if s.chance(0.4):
        n = s.int(2, 20)
        s.fact(f"A track is {track} meters around", f"One lap of the track is {track} meters")
        s.fact(f"{p.name} wants to run {s.digits(track * n)} meters",
               f"{p.name}'s goal is {s.digits(track * n)} meters")
        s.div(track * n, track)
        s.ask(f"How many laps must {p.name} run", emb=f"how many laps {p.name} runs", np="the number of laps")
        return
    n, days = s.int(2, 8), s.int(2, 5)
    s.fact(f"{p.name} runs {s.n(n)} laps of a {track}-meter track",
           f"Each lap is {track} meters, and {p.name} runs {s.n(n)} laps")
    s.fact(f"{s.who(p, 'does')} this on {s.n(days)} days",
           f"{s.who(p, 'runs')} that many on {s.n(days)} days this week")
    s.mul(s.mul(n, track), days)
    s.ask(f"How many meters does {p.name} run this week", emb=f"how far {p.name} runs",
          np="the total distance in meters")


@family
def fuel(s: Scene):
    p = s.person()
    if s.chance(0.5):
        per, liters, price = s.int(8, 25), s.int(2, 40), s.int(2, 4)
        unit = s.pick(DISTANCE)
        s.fact(f"{p.name}'s car goes {per} {unit} on one liter of fuel",
               f"{p.name}'s car travels {per} {unit} per liter")
        s.fact(f"{s.who(p, 'drives')} {s.digits(per * liters)} {unit}", f"The trip is {s.digits(per * liters)} {unit}")
        used = s.div(per * liters, per)
        if s.chance(0.5):
            s.fact(f"Fuel costs {s.money(price)} per liter")
            s.mul(used, price)
            s.ask("How much does the fuel cost", emb="how much the fuel costs", np="the cost of the fuel")
        else:
            s.ask("How many liters of fuel are used", emb="how many liters are used", np="the fuel used in liters")
        return
    tank, rate, hours = s.int(40, 400), s.int(3, 30), s.int(2, 8)
    vol = s.pick(VOLUME)
    vehicle = s.say("truck", "tractor", "boat", "generator")
    s.fact(f"A {vehicle} has {tank} {vol} of fuel", f"The {vehicle}'s tank holds {tank} {vol} of fuel")
    s.fact(f"It burns {rate} {vol} each hour for {s.n(hours)} hours",
           f"It runs for {s.n(hours)} hours and uses {rate} {vol} an hour")
    s.sub(tank, s.mul(rate, hours))
    s.ask(f"How many {vol} of fuel are left", emb=f"how many {vol} remain", np=f"the fuel left in {vol}")


@family
def tickets(s: Scene):
    place = s.say("the zoo", "a concert", "the museum", "a movie", "the aquarium", "a football game", "the circus")
    if s.chance(0.6):
        p = s.person()
        adult = s.int(5, 60)
        child = s.int(2, adult - 1)
        a, c = s.int(2, 6), s.int(2, 8)
        s.fact(f"Tickets to {place} cost {s.money(adult)} for adults and {s.money(child)} for children",
               f"At {place}, an adult ticket is {s.money(adult)} and a child ticket is {s.money(child)}")
        s.fact(f"{p.name} buys {s.n(a)} adult tickets and {s.n(c)} child tickets",
               f"{p.name} goes with {s.n(a)} adults and {s.n(c)} children and buys everyone a ticket")
        cost = s.add(s.mul(a, adult), s.mul(c, child))
        if s.chance(0.4):
            bills = [b for b in (50, 100, 200, 500) if b >= cost]
            if not bills:
                raise Reject
            paid = s.pick(bills[:2])
            s.fact(f"{s.who(p, 'pays')} with {s.money(paid)}")
            s.sub(paid, cost)
            s.ask(f"How much change does {p.name} get", emb=f"how much change {p.name} gets", np="the change")
            return
        s.ask("How much do the tickets cost in all", f"How much does {p.name} pay",
              emb=f"how much {p.name} pays for the tickets", np="the total cost of the tickets")
        return
    rows, per = s.int(5, 40), s.int(8, 30)
    sold = s.int(2, rows * per)
    s.fact(f"The hall for {place} has {s.n(rows)} rows of {per} seats",
           f"There are {s.n(rows)} rows with {per} seats each")
    s.fact(f"{s.digits(sold)} tickets have been sold", f"So far {s.digits(sold)} seats are sold")
    s.sub(s.mul(rows, per), sold)
    s.ask("How many seats are still available", "How many tickets are left to sell",
          emb="how many seats are still free", np="the number of empty seats")


@family
def bus(s: Scene):
    vehicle = s.say("bus", "train", "tram", "ferry", "subway car")
    start = s.int(5, 60)
    s.fact(f"A {vehicle} leaves with {s.n(start)} passengers", f"There are {s.n(start)} people on a {vehicle}")
    count = start
    for stop in ("first", "second")[:s.int(1, 2)]:
        on, off = s.int(2, 25), s.int(2, 25)
        s.fact(f"At the {stop} stop, {s.n(on)} people get on and {s.n(off)} get off",
               f"At the {stop} stop, {s.n(off)} get off and {s.n(on)} get on")
        count = s.sub(s.add(count, on), off)
    s.ask(f"How many passengers are on the {vehicle} now", f"How many people are on the {vehicle} after that",
          emb=f"how many people are on the {vehicle}", np="the number of passengers left")


PETS = things("dog, cat, rabbit, hamster, parrot, guinea pig, turtle")


@family
def pets(s: Scene):
    p, pet = s.person(), s.pick(PETS)
    k, per = s.int(2, 6), s.int(2, 5)
    food = s.say("cups", "scoops", "handfuls", "spoonfuls")
    s.fact(f"{p.name} has {s.n(k)} {pet.many}", f"There are {s.n(k)} {pet.many} at {p.name}'s house")
    s.fact(f"Each {pet.one} eats {s.n(per)} {food} of food a day",
           f"Every {pet.one} gets {s.n(per)} {food} of food daily")
    daily = s.mul(k, per)
    if s.chance(0.5):
        days = s.int(2, 30)
        s.mul(daily, days)
        s.ask(f"How many {food} of food do the {pet.many} eat in {s.n(days)} days",
              emb=f"how many {food} they eat in {days} days")
    else:
        days = s.int(2, 40)
        s.fact(f"A bag of food holds {s.digits(daily * days)} {food}",
               f"{s.who(p, 'buys')} a bag with {s.digits(daily * days)} {food}")
        s.div(daily * days, daily)
        s.ask("How many days does the bag last", emb="how many days the bag lasts",
              np="the number of days the food lasts")


FARM = (("chicken", 2), ("duck", 2), ("goose|geese", 2), ("turkey", 2), ("cow", 4), ("goat", 4), ("sheep|sheep", 4),
        ("pig", 4), ("horse", 4))


@family
def farm_legs(s: Scene):
    (two, two_legs), (four, four_legs) = s.pick(FARM[:4]), s.pick(FARM[4:])
    bird, beast = things(two)[0], things(four)[0]
    a, b = s.int(2, 60), s.int(2, 40)
    s.fact(f"A farm has {s.n(a)} {bird.many} and {s.n(b)} {beast.many}",
           f"On a farm there are {s.n(a)} {bird.many} and {s.n(b)} {beast.many}")
    s.fact(f"Each {bird.one} has {s.n(two_legs)} legs and each {beast.one} has {s.n(four_legs)} legs")
    if s.chance(0.5):
        more = s.int(2, 10)
        s.fact(f"{s.then()}the farmer buys {s.n(more)} more {beast.many}")
        b = s.add(b, more)
    s.add(s.mul(b, four_legs), s.mul(a, two_legs))
    s.ask("How many legs are there in all", "How many animal legs are on the farm",
          emb="how many legs there are", np="the total number of legs")


@family
def rainfall(s: Scene):
    unit = s.say("mm", "millimeters", "cm")
    a, b, c = s.int(1, 60), s.int(1, 60), s.int(1, 60)
    if s.chance(0.5):
        c += -(a + b + c) % 3
        s.fact(f"It rained {a} {unit} on Monday, {b} {unit} on Tuesday and {c} {unit} on Wednesday",
               f"Rain gauges show {a} {unit}, {b} {unit} and {c} {unit} on three days")
        s.div(s.add(s.add(a, b), c), 3)
        s.ask(f"What was the average rainfall per day over the three days, in {unit}",
              emb="the average daily rainfall over the three days",
              np="the average rainfall per day over the three days")
        return
    s.fact(f"It rained {a} {unit} on Monday", f"On Monday {a} {unit} of rain fell")
    s.fact(f"On Tuesday it rained {b} {unit}, and on Wednesday {c} {unit}")
    s.add(s.add(a, b), c)
    s.ask(f"How many {unit} of rain fell over the three days", "How much rain fell in total",
          emb=f"how many {unit} of rain fell", np="the total rainfall")


@family
def elevator(s: Scene):
    p = s.person()
    if s.chance(0.3):
        floor, height = s.int(2, 40), s.int(3, 5)
        s.fact(f"Each floor of a building is {s.n(height)} meters high",
               f"A building's floors are {s.n(height)} meters apart")
        s.fact(f"{p.name} lives on floor {floor}")
        s.mul(floor, height)
        s.ask(f"How many meters above the ground floor is {p.name}'s floor", emb=f"how high {p.name} lives",
              np=f"the height of {p.name}'s floor in meters")
        return
    start, up, down = s.int(1, 30), s.int(2, 20), s.int(2, 20)
    s.fact(f"{p.name} gets on the elevator on floor {start}", f"{p.name} is on floor {start}")
    s.fact(f"{s.who(p, 'goes')} up {s.n(up)} floors and then down {s.n(down)} floors",
           f"The elevator goes up {s.n(up)} floors, then down {s.n(down)}")
    floor = s.sub(s.add(start, up), down)
    if s.chance(0.4):
        again = s.int(2, 15)
        s.fact(f"Finally the elevator goes up {s.n(again)} more floors")
        s.add(floor, again)
    s.ask(f"On which floor is {p.name} now", f"What floor does {p.name} end up on",
          emb=f"which floor {p.name} is on", np=f"the floor {p.name} ends on")


@family
def water_tank(s: Scene):
    tank = s.say("tank", "pool", "barrel", "fish tank", "bathtub")
    vol = s.pick(VOLUME)
    rate, minutes = s.int(2, 40), s.int(2, 30)
    roll = s.rng.random()
    if roll < 0.35:
        s.fact(f"A {tank} holds {s.digits(rate * minutes)} {vol}",
               f"An empty {tank} can hold {s.digits(rate * minutes)} {vol}")
        s.fact(f"A hose fills it at {rate} {vol} per minute", f"Water flows in at {rate} {vol} a minute")
        s.div(rate * minutes, rate)
        s.ask(f"How many minutes does it take to fill the {tank}",
              emb=f"how long it takes to fill the {tank}, in minutes",
              np="the filling time in minutes")
    elif roll < 0.7:
        have = s.int(0, 500)
        s.fact(f"A {tank} has {have} {vol} of water in it", f"There are {have} {vol} in a {tank}")
        s.fact(f"Water is added at {rate} {vol} per minute for {minutes} minutes")
        s.add(have, s.mul(rate, minutes))
        s.ask(f"How many {vol} are in the {tank} now", emb=f"how much water the {tank} holds now",
              np=f"the water in the {tank}")
    else:
        full = rate * minutes + s.int(0, 800)
        s.fact(f"A full {tank} holds {s.digits(full)} {vol}", f"A {tank} starts with {s.digits(full)} {vol}")
        s.fact(f"It drains at {rate} {vol} per minute for {minutes} minutes",
               f"For {minutes} minutes, {rate} {vol} drain out every minute")
        left = s.sub(full, s.mul(rate, minutes))
        if s.chance(0.4):
            refill = s.int(1, 300)
            s.fact(f"Then {refill} {vol} are poured back in")
            left = s.add(left, refill)
        s.ask(f"How many {vol} are in the {tank} at the end", emb=f"how many {vol} are left", np="the water left")


@family
def paint(s: Scene):
    p = s.person()
    w, h = s.int(2, 20), s.int(2, 6)
    cover = s.divisor(w * h, 2, 12)
    s.fact(f"{p.name} paints a wall that is {w} meters wide and {h} meters high",
           f"A wall is {w} meters long and {h} meters tall, and {p.name} wants to paint it")
    s.fact(f"One can of paint covers {cover} square meters", f"Each paint can covers {cover} square meters")
    cans = s.div(s.mul(w, h), cover)
    if s.chance(0.5):
        price = s.int(5, 40)
        s.fact(f"A can costs {s.money(price)}", f"Paint is {s.money(price)} a can")
        s.mul(cans, price)
        s.ask(f"How much does {p.name} spend on paint", emb="how much the paint costs", np="the cost of the paint")
    else:
        s.ask(f"How many cans of paint does {p.name} need", emb=f"how many cans {p.name} needs",
              np="the number of cans needed")


@family
def temperature(s: Scene):
    t, up, down = s.int(0, 25), s.int(2, 20), s.int(2, 20)
    s.fact(f"In the morning it is {t} degrees", f"The temperature at dawn is {t} degrees")
    s.fact(f"By noon it rises {s.n(up)} degrees", f"It warms up by {s.n(up)} degrees before lunch")
    s.fact(f"At night it drops {s.n(down)} degrees", f"By evening it falls {s.n(down)} degrees")
    night = s.sub(s.add(t, up), down)
    if night > 2 and s.chance(0.4):
        more = s.int(2, night)
        s.fact(f"By morning it drops {s.n(more)} more degrees")
        s.sub(night, more)
        s.ask("What is the temperature the next morning", emb="what the temperature is the next morning",
              np="the next morning's temperature in degrees")
        return
    s.ask("What is the temperature at night", "How warm is it at night",
          emb="what the temperature is at night", np="the night temperature in degrees")


@family
def plant_growth(s: Scene):
    p = s.person()
    plant = s.say("sunflower", "bean plant", "tomato plant", "young tree", "bamboo shoot")
    h, g, w = s.int(2, 100), s.int(2, 15), s.int(2, 12)
    s.fact(f"{p.name}'s {plant} is {h} cm tall", f"A {plant} in {p.name}'s garden is {h} cm tall")
    s.fact(f"It grows {s.n(g)} cm every week", f"Each week it grows {s.n(g)} cm")
    s.add(h, s.mul(g, w))
    s.ask(f"How tall will the {plant} be after {s.n(w)} weeks", emb=f"how tall it is after {w} weeks",
          np=f"its height after {w} weeks")


@family
def screen_time(s: Scene):
    p = s.person()
    show = s.say("TV show", "podcast", "anime series", "cooking show", "online course")
    episodes, minutes = s.int(3, 30), s.int(10, 60)
    s.fact(f"{article(show).capitalize()} {show} has {s.n(episodes)} episodes, each {minutes} minutes long",
           f"{p.name} starts watching {article(show)} {show} with {s.n(episodes)} episodes of {minutes} minutes")
    if s.chance(0.5):
        seen = s.int(2, episodes - 1)
        s.fact(f"{p.name} has already watched {s.n(seen)} episodes")
        s.mul(s.sub(episodes, seen), minutes)
        s.ask(f"How many minutes of the {show} are left for {p.name}", emb="how many minutes are left",
              np="the number of minutes left to watch")
    else:
        s.mul(episodes, minutes)
        s.ask(f"How many minutes long is the {show} in total", emb="how many minutes it lasts",
              np="its total length in minutes")


@family
def weights(s: Scene):
    goods = s.say("flour", "rice", "sand", "potatoes", "apples", "cement")
    kg, bags = s.int(2, 50), s.int(2, 40)
    s.fact(f"Each bag of {goods} weighs {kg} kilograms", f"A bag of {goods} is {kg} kg")
    s.fact(f"A truck carries {s.n(bags)} bags", f"{s.n(bags)} bags are loaded on a truck")
    load = s.mul(kg, bags)
    if s.chance(0.5):
        crate = s.int(5, 300)
        s.fact(f"It also carries a crate that weighs {crate} kilograms")
        load = s.add(load, crate)
    if s.chance(0.4):
        trips = s.int(2, 5)
        s.fact(f"The truck makes {s.n(trips)} trips with the same load")
        s.mul(load, trips)
        s.ask("How many kilograms does the truck carry over all the trips", emb="how many kilograms it moves in all",
              np="the total weight moved in kg")
        return
    s.ask("How many kilograms does the truck carry", emb="how heavy the load is in kilograms",
          np="the total load in kg")


# --- Drawing and splitting ---------------------------------------------------------------------

class Problem(mathgen.Problem):
    """mathgen's problem whose instance is its wording: two draws worded alike are one problem."""

    @property
    def instance_key(self) -> str:
        return hashlib.sha1(self.question.encode()).hexdigest()


def draw(rng: random.Random) -> Problem:
    while True:
        name = rng.choice(list(FAMILIES))
        scene = Scene(rng)
        try:
            FAMILIES[name](scene)
            question = scene.question()
        except Reject:
            continue
        answer = int(scene.lines[-1].rsplit("=", 1)[1])
        return Problem(name, tuple(scene.values), question, finish(scene.lines, answer), answer)


def generate(n: int, split: str, seed: int) -> list[Problem]:
    """``n`` distinct problems of one split ("train" or "heldout"), the same for the same seed."""
    return mathgen.distinct(n, split, f"wordproblems-{split}-{seed}", draw)
