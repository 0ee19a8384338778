"""Arithmetic word problems in natural language, from one addition of single digits up.

A named person holds some items; `steps` events change the count (gets, buys or finds more; gives
away, loses or sells some, never below zero; gets as many again); the question asks how many there
are now. The number of events is the problem's difficulty (`metadata.difficulty`, which the eval
stage reports accuracy by) and the operations are kept in `metadata.operations`, so the answer can
be recomputed. Levels take turns within each split, so every prefix of one is balanced. Problem
texts are unique over all splits (normalized as decontamination compares them). Deterministic given
a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sparse2dense.data import Record
from sparse2dense.decontamination import normalize_problem
from sparse2dense.sections import WordTask

SPLITS = ("test", "labeled", "unlabeled")
SOURCE = "words"
# Draws per wanted problem before the task is declared too small to fill its splits with distinct texts.
MAX_DRAWS_PER_PROBLEM = 50


@dataclass(frozen=True)
class Person:
    name: str
    subject: str  # he / she
    object: str  # him / her
    possessive: str  # his / her


_HE, _SHE = ("he", "him", "his"), ("she", "her", "her")
PEOPLE = [
    Person(name, *pronouns)
    for names, pronouns in (
        (("Leo", "Sam", "Omar", "Ben", "Ravi", "Tom", "Hugo", "Mateo", "Ken", "Noah", "Ali", "Jack"), _HE),
        (("Mia", "Ana", "Zoe", "Lily", "Priya", "Emma", "Sara", "Nora", "Yuki", "Ella", "Ruth", "Ivy"), _SHE),
    )
    for name in names
]
# (singular, plural)
ITEMS = [
    ("apple", "apples"),
    ("marble", "marbles"),
    ("sticker", "stickers"),
    ("pencil", "pencils"),
    ("coin", "coins"),
    ("cookie", "cookies"),
    ("stamp", "stamps"),
    ("book", "books"),
    ("card", "cards"),
    ("shell", "shells"),
    ("balloon", "balloons"),
    ("crayon", "crayons"),
    ("toy car", "toy cars"),
    ("flower", "flowers"),
    ("ribbon", "ribbons"),
    ("button", "buttons"),
]
GIVERS = ("friend", "aunt", "uncle", "grandmother", "brother", "sister", "teacher", "neighbor")
PLACES = ("at the park", "at school", "under the bed", "in a box", "on the way home", "in the garden")

# Phrasings per sentence kind. Fields: {who} subject (name or pronoun), {name}, {obj} object pronoun,
# {pos} possessive, {n} counted item ("5 apples"), {more} ("5 more apples"), {k} bare number,
# {items} plural, {giver}, {place}.
OPENINGS = (
    "{name} has {n}.",
    "{name} starts with {n}.",
    "{name} owns {n}.",
    "{name}'s bag holds {n}.",
)
EVENTS = {
    "add": (
        "{who} gets {k} more.",
        "{who} buys {more}.",
        "{who} finds {n} {place}.",
        "{who} picks up {k} more.",
        "{Pos} {giver} gives {obj} {more}.",
    ),
    "subtract": (
        "{who} gives away {n}.",
        "{who} loses {k} of them.",
        "{who} sells {n}.",
        "{who} gives {k} to {pos} {giver}.",
    ),
    "multiply": (
        "{Pos} {giver} gives {obj} as many {items} as {subject} already has.",
        "{who} doubles the number of {items} {subject} has.",
    ),
}
QUESTIONS = (
    "How many {items} does {name} have now?",
    "How many {items} does {name} have in the end?",
    "How many {items} does {name} have at the end?",
)


def solve(start: int, operations: list[dict]) -> int:
    """The count after applying every operation to `start`: the answer of a word problem."""
    count = start
    for op in operations:
        count = {
            "add": count + op["value"],
            "subtract": count - op["value"],
            "multiply": count * op["value"],
        }[op["op"]]
    return count


def _operations(task: WordTask, level: int, rng: random.Random) -> tuple[int, list[dict]]:
    """A starting count and `level` events, each within the level's operand range, never below zero."""
    top = task.max_operand[level - 1]
    count = rng.randint(1, top)
    start, operations = count, []
    for _ in range(level):
        kinds = ["add"]
        if level >= task.removal_from_level and count > 0:
            kinds.append("subtract")
        # One doubling at most, of a count within the level's operand range, keeps answers in the
        # level's range of magnitude.
        doubled = any(op["op"] == "multiply" for op in operations)
        if level >= task.doubling_from_level and 0 < count <= top and not doubled:
            kinds.append("multiply")
        kind = rng.choice(kinds)
        value = 2 if kind == "multiply" else rng.randint(1, min(top, count) if kind == "subtract" else top)
        operations.append({"op": kind, "value": value})
        count = solve(count, operations[-1:])
    return start, operations


def _counted(k: int, item: tuple[str, str]) -> str:
    return f"{k} {item[0] if k == 1 else item[1]}"


def _text(
    person: Person, item: tuple[str, str], start: int, operations: list[dict], rng: random.Random
) -> str:
    fields = {
        "name": person.name,
        "obj": person.object,
        "pos": person.possessive,
        "Pos": person.possessive.capitalize(),
        "subject": person.subject,
        "items": item[1],
    }
    sentences = [rng.choice(OPENINGS).format(n=_counted(start, item), **fields)]
    for op in operations:
        who = rng.choice((person.name, person.subject.capitalize()))
        sentences.append(
            rng.choice(EVENTS[op["op"]]).format(
                who=who,
                k=op["value"],
                n=_counted(op["value"], item),
                more=_counted(op["value"], (f"more {item[0]}", f"more {item[1]}")),
                giver=rng.choice(GIVERS),
                place=rng.choice(PLACES),
                **fields,
            )
        )
    sentences.append(rng.choice(QUESTIONS).format(**fields))
    return " ".join(sentences)


def _problem(task: WordTask, level: int, rng: random.Random) -> tuple[str, dict]:
    person, item = rng.choice(PEOPLE), rng.choice(ITEMS)
    start, operations = _operations(task, level, rng)
    metadata = {
        "difficulty": level,
        "start": start,
        "operations": operations,
        "name": person.name,
        "item": item[1],
    }
    return _text(person, item, start, operations, rng), metadata


def generate_words(task: WordTask, seed: int) -> dict[str, list[Record]]:
    """Labeled, unlabeled and test problems, levels taking turns in each split, no text in two splits."""
    wanted = {"test": task.num_test, "labeled": task.num_labeled, "unlabeled": task.num_unlabeled}
    levels = list(range(task.min_steps, task.max_steps + 1))
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[Record]] = {}
    for split in SPLITS:
        records = []
        for index in range(wanted[split]):
            level = levels[index % len(levels)]
            for _ in range(MAX_DRAWS_PER_PROBLEM):
                problem, metadata = _problem(task, level, rng)
                if (key := normalize_problem(problem)) not in seen:
                    break
            else:
                raise ValueError(
                    f"word task too small: no new {level}-step problem in {MAX_DRAWS_PER_PROBLEM} draws; "
                    "raise data.words.max_operand or ask for fewer problems"
                )
            seen.add(key)
            answer = str(solve(metadata["start"], metadata["operations"]))
            records.append(
                {
                    "id": f"words-{split}-{index}",
                    "problem": problem,
                    "answer": answer,
                    "source": SOURCE,
                    "metadata": metadata,
                }
            )
        splits[split] = records
    return splits
