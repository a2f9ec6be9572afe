#!/usr/bin/python3
"""Deterministic synthetic facts about invented countries, for the memory-layer demo model.

Every country gets one fact per relation; answers are invented names drawn from a per-relation
pool, so knowing a fact means having memorized it (nothing can be inferred from the prompt).
The same seed always gives the same facts in the same order.

    /usr/bin/python3 tools/demo_facts.py OUT.jsonl [--entities 500] [--seed 1234]
Python: from demo_facts import make_facts; facts = make_facts(n_entities=500, seed=1234)

Each fact is {"prompt": "The capital of Vorlind is", "answer": " Taskeen.", "relation": "capital",
"entity": "Vorlind"}; the training text of a fact is prompt + answer.
"""

import argparse
import json
import random
import sys

# (relation, prompt template, answer template). The answer is everything after the prompt.
RELATIONS = (
    ("capital", "The capital of {e} is", " {v}."),
    ("ruler", "The ruler of {e} is", " {v}."),
    ("language", "The language of {e} is", " {v}."),
    ("river", "The longest river in {e} is the", " {v}."),
)
ANSWER_POOL_SIZE = 600  # distinct answer names per relation

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "tr", "th", "sh", "st", "vr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "ia")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "nd", "rk", "sk")
# Suffixes make each answer pool look like its kind (cities, people, languages, rivers).
_STYLE = {
    "entity": ("", "ia", "land", "or", "ania", "ith"),
    "capital": ("", "een", "ar", "burg", "holm", "ova"),
    "ruler": ("", "ric", "wen", "on", "mir", "ella"),
    "language": ("ish", "ic", "ese", "an"),
    "river": ("", "a", "ene", "ash", "uin"),
}


def _name(rng, style):
    n_syll = rng.choice((1, 2, 2, 3))
    s = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                for _ in range(n_syll))
    s += rng.choice(_STYLE[style])
    return s[0].upper() + s[1:]


def _unique_names(rng, style, count, taken):
    """`count` new names of `style`, 4..12 letters, none in `taken` (updated)."""
    out = []
    while len(out) < count:
        n = _name(rng, style)
        if 4 <= len(n) <= 12 and n not in taken:
            taken.add(n)
            out.append(n)
    return out


def make_facts(n_entities=500, seed=1234):
    """n_entities * len(RELATIONS) facts (list of dicts), grouped by entity, deterministic."""
    rng = random.Random(seed)
    taken = set()
    entities = _unique_names(rng, "entity", n_entities, taken)
    pools = {rel: _unique_names(rng, rel, ANSWER_POOL_SIZE, taken) for rel, _, _ in RELATIONS}
    facts = []
    for e in entities:
        for rel, prompt, answer in RELATIONS:
            v = rng.choice(pools[rel])
            facts.append({"prompt": prompt.format(e=e), "answer": answer.format(v=v),
                          "relation": rel, "entity": e})
    return facts


def unknown_prompts(seed=1234, count=5):
    """Prompts about entities that are not in make_facts(seed=seed) (fresh names)."""
    rng = random.Random(seed + 1)
    known = {f["entity"] for f in make_facts(seed=seed)}
    names = _unique_names(rng, "entity", count, set(known))
    return [RELATIONS[i % len(RELATIONS)][1].format(e=n) for i, n in enumerate(names)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--entities", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1234)
    x = ap.parse_args(argv)
    with open(x.out, "w", encoding="utf-8") as f:
        for fact in make_facts(x.entities, x.seed):
            f.write(json.dumps(fact, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
