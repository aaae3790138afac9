"""Writes the small text data of the pretrain-then-fine-tune examples (deterministic; run from anywhere).

    topics.txt            unlabelled sentences, one per line, about four topics (the pretraining corpus)
    topics-labelled.csv   other sentences of the same kind with their topic (the fine-tuning set)

Each sentence is built from a template, words of its topic and words shared by every topic; one
sentence in six borrows a word from another topic, so the labels are not a pure keyword lookup.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {
    "space": {
        "noun": ["rocket", "planet", "telescope", "astronaut", "comet", "satellite", "moon", "galaxy", "orbit", "crater"],
        "verb": ["launched", "circled", "observed", "photographed", "approached", "mapped", "crossed", "studied"],
        "adj": ["distant", "frozen", "bright", "silent", "red", "ancient", "massive"],
        "place": ["near the sun", "beyond mars", "in deep space", "over the station", "past the asteroid belt"],
    },
    "cooking": {
        "noun": ["soup", "bread", "onion", "oven", "recipe", "garlic", "pasta", "sauce", "chef", "kitchen"],
        "verb": ["baked", "stirred", "chopped", "tasted", "roasted", "seasoned", "boiled", "served"],
        "adj": ["spicy", "fresh", "golden", "salty", "warm", "crispy", "sweet"],
        "place": ["in the pan", "on the stove", "at the market", "for dinner", "in a clay pot"],
    },
    "sports": {
        "noun": ["goal", "referee", "striker", "stadium", "coach", "match", "ball", "team", "league", "keeper"],
        "verb": ["scored", "passed", "defended", "kicked", "trained", "tackled", "won", "blocked"],
        "adj": ["fast", "tired", "young", "famous", "strong", "nervous", "brave"],
        "place": ["in the final minute", "at the stadium", "before the break", "on the field", "in the cup final"],
    },
    "weather": {
        "noun": ["storm", "rain", "cloud", "wind", "snow", "thunder", "fog", "forecast", "flood", "drought"],
        "verb": ["swept", "covered", "soaked", "battered", "cooled", "flooded", "darkened", "froze"],
        "adj": ["heavy", "cold", "humid", "grey", "sudden", "mild", "stormy"],
        "place": ["over the valley", "along the coast", "across the north", "in the hills", "by the evening"],
    },
}
SHARED = {
    "start": ["yesterday", "this morning", "last week", "again", "once more", "suddenly", "at last"],
    "people": ["the people", "my neighbour", "a reporter", "the children", "everyone", "a stranger"],
    "end": ["and nobody expected it", "as usual", "for the first time", "which surprised many", "and then it was over"],
}
TEMPLATES = [
    "{start} the {adj} {noun} {verb} the {noun2} {place}.",
    "{people} said the {noun} {verb} {place} {end}.",
    "the {adj} {noun} and the {noun2} {verb} {place}.",
    "{start} {people} watched as the {noun} {verb} the {adj} {noun2}.",
    "a {adj} {noun} {verb} {place} {end}.",
]


def sentence(topic: str, rng: random.Random) -> str:
    second = TOPICS[topic]["noun"]
    if rng.random() < 1 / 6:  # borrow a word from another topic
        second = TOPICS[rng.choice([t for t in TOPICS if t != topic])]["noun"]
    slots = {k: rng.choice(v) for k, v in {**TOPICS[topic], **SHARED}.items()}
    slots["noun2"] = rng.choice(second)
    return rng.choice(TEMPLATES).format(**slots)


def main(folder: Path = Path(__file__).resolve().parent) -> None:
    rng = random.Random(2024)
    topics = list(TOPICS)
    lines = [sentence(rng.choice(topics), rng) for _ in range(2600)]
    (folder / "topics.txt").write_text("\n".join(lines) + "\n")
    with open(folder / "topics-labelled.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "topic"])
        for k in range(120):  # few labels: where pretraining pays
            topic = topics[k % len(topics)]
            writer.writerow([sentence(topic, rng), topic])


if __name__ == "__main__":
    main()
