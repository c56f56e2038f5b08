#!/usr/bin/env python3
"""Arithmetic word problems for the fine-tuning experiment (BENCHMARKS.md, "Fine-tuning
SmolLM2"): one question a line, the answer a whole number. Seeded; the test problems share no
(template, numbers) with the training ones.

    python3 bench/finetune/arithmetic.py OUT_DIR   # writes OUT_DIR/train.jsonl, test.jsonl
"""
import json
import random
import sys

TEMPLATES = [
    ("{name} has {a} apples and buys {b} more. How many apples does {name} have now?", "+"),
    ("{name} had {a} marbles and gave away {b}. How many marbles are left?", "-"),
    ("A shelf holds {a} books. {name} adds {b} books. How many books are on the shelf?", "+"),
    ("There were {a} birds on a tree. {b} flew away. How many birds stayed?", "-"),
    ("{name} walked {a} steps in the morning and {b} steps in the evening. How many steps in all?", "+"),
    ("A box had {a} pencils. {name} took out {b}. How many pencils are in the box?", "-"),
]
NAMES = ["Tom", "Ana", "Li", "Sara", "Omar", "Mia", "Ivan", "Zoe"]


def problem(rng):
    t = rng.randrange(len(TEMPLATES))
    text, op = TEMPLATES[t]
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if op == "-" and b > a:
        a, b = b, a
    name = rng.choice(NAMES)
    answer = a + b if op == "+" else a - b
    return (t, a, b), {"question": text.format(name=name, a=a, b=b), "answer": str(answer)}


def main():
    out = sys.argv[1]
    rng = random.Random(2026)
    seen, test, train = set(), [], []
    while len(test) < 200:
        key, p = problem(rng)
        if key not in seen:
            seen.add(key)
            test.append(p)
    while len(train) < 2000:
        key, p = problem(rng)
        if key not in seen:
            seen.add(key)
            train.append(p)
    for name, rows in [("train", train), ("test", test)]:
        with open(f"{out}/{name}.jsonl", "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
