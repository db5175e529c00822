"""Deterministic generator of the bundled demo corpus.

The demo must run offline and must show something real: each organisation holds text
from its own industry (non-IID data), and fine-tuning on it visibly lowers eval loss.
So the corpus is written by this module, not downloaded: per domain a small grammar of
templates, a vocabulary of entities and metrics, and a handful of fixed "facts"
(term → definition) that a model can actually memorise. A separate generic part,
which mentions every domain's words in neutral sentences, pre-trains the tiny demo base
model so that domain fine-tuning starts from something that already knows the words.

The generated files live in ``learning/demo_data/`` (package data, Apache-2.0, the
project's own text). Regenerate them with ``python -m fedswarm.learning.demo_corpus``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

CORPUS_VERSION = "2"

PLACES = ("Northfield", "Lakeside", "Riverton", "Eastport", "Hillcrest", "Westbrook",
          "Southgate", "Oakridge", "Maplewood", "Stonebridge", "Greenvale", "Harborview")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
PEOPLE = ("Ada", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas",
          "Kira", "Luca", "Mina", "Nils", "Omar", "Priya")


@dataclass(frozen=True)
class DomainGrammar:
    """Everything the generator needs to write text that sounds like one industry."""

    name: str
    site: str
    roles: tuple[str, ...]
    entities: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]
    actions: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]


DOMAIN_GRAMMARS: tuple[DomainGrammar, ...] = (
    DomainGrammar(
        "finance", "branch", ("analyst", "trader", "auditor", "treasurer"),
        ("bond portfolio", "loan book", "equity fund", "credit line", "savings account",
         "currency hedge"),
        (("yield", "percent"), ("exposure", "million euros"), ("liquidity ratio", "points"),
         ("default rate", "percent")),
        ("rebalanced", "audited", "hedged", "refinanced", "priced"),
        (("a coupon", "the interest a bond pays each year"),
         ("duration", "the sensitivity of a bond price to interest rates"),
         ("a margin call", "a demand to add collateral to a leveraged position"),
         ("liquidity", "how quickly an asset can be sold without moving its price"),
         ("a dividend", "the share of profit paid to shareholders"))),
    DomainGrammar(
        "medicine", "clinic", ("nurse", "surgeon", "pharmacist", "cardiologist"),
        ("blood test", "insulin dose", "x-ray scan", "vaccine batch", "heart monitor",
         "antibiotic course"),
        (("blood pressure", "mmHg"), ("heart rate", "beats per minute"),
         ("glucose level", "mmol per litre"), ("temperature", "degrees")),
        ("prescribed", "monitored", "screened", "administered", "diagnosed"),
        (("hypertension", "persistently high blood pressure in the arteries"),
         ("an antibiotic", "a drug that kills or slows bacteria"),
         ("triage", "sorting patients by how urgent their care is"),
         ("a placebo", "an inactive treatment used as a control"),
         ("anaemia", "a shortage of red blood cells or haemoglobin"))),
    DomainGrammar(
        "manufacturing", "plant", ("machinist", "line manager", "welder", "quality engineer"),
        ("assembly line", "cnc lathe", "injection mould", "conveyor belt", "robot arm",
         "paint booth"),
        (("throughput", "units per hour"), ("scrap rate", "percent"),
         ("cycle time", "seconds"), ("downtime", "minutes")),
        ("calibrated", "retooled", "inspected", "lubricated", "assembled"),
        (("lean production", "removing waste from every step of a process"),
         ("a tolerance", "the allowed deviation from a nominal dimension"),
         ("kanban", "a card system that signals when to make more parts"),
         ("overall equipment effectiveness", "availability times performance times quality"),
         ("a jig", "a device that holds a part in place while it is machined"))),
    DomainGrammar(
        "law", "court", ("judge", "solicitor", "paralegal", "barrister"),
        ("lease contract", "patent claim", "witness statement", "court order",
         "appeal brief", "settlement offer"),
        (("filing fee", "euros"), ("hearing delay", "days"), ("case backlog", "cases"),
         ("damages award", "thousand euros")),
        ("drafted", "appealed", "notarised", "dismissed", "reviewed"),
        (("a tort", "a civil wrong that causes harm to another person"),
         ("habeas corpus", "the right to challenge unlawful detention"),
         ("an affidavit", "a written statement confirmed by oath"),
         ("precedent", "an earlier decision that guides later cases"),
         ("liability", "legal responsibility for an act or omission"))),
    DomainGrammar(
        "energy", "substation", ("grid operator", "lineman", "plant engineer", "dispatcher"),
        ("wind turbine", "solar array", "gas turbine", "battery bank", "transformer",
         "transmission line"),
        (("output", "megawatts"), ("load factor", "percent"), ("frequency", "hertz"),
         ("voltage", "kilovolts")),
        ("dispatched", "curtailed", "synchronised", "maintained", "metered"),
        (("baseload", "the minimum demand on a grid over a day"),
         ("a capacity factor", "actual output divided by maximum possible output"),
         ("curtailment", "reducing generation below what is available"),
         ("peak shaving", "cutting demand at the busiest hours"),
         ("an inverter", "a device that turns direct current into alternating current"))),
    DomainGrammar(
        "retail", "store", ("cashier", "buyer", "merchandiser", "store manager"),
        ("shelf display", "loyalty card", "checkout lane", "seasonal range", "price tag",
         "stock room"),
        (("footfall", "visitors"), ("basket size", "items"), ("shrinkage", "percent"),
         ("sales", "thousand euros")),
        ("restocked", "discounted", "displayed", "returned", "reordered"),
        (("a markdown", "a permanent price reduction on slow stock"),
         ("shrinkage", "stock lost to theft, damage or error"),
         ("a planogram", "a diagram of where each product sits on a shelf"),
         ("footfall", "the number of people entering a store"),
         ("a loss leader", "a product sold below cost to attract customers"))),
    DomainGrammar(
        "agriculture", "farm", ("farmer", "agronomist", "vet", "harvester driver"),
        ("wheat field", "dairy herd", "irrigation pump", "grain silo", "orchard",
         "greenhouse"),
        (("yield", "tonnes per hectare"), ("rainfall", "millimetres"),
         ("soil moisture", "percent"), ("milk output", "litres")),
        ("irrigated", "harvested", "fertilised", "sowed", "pruned"),
        (("crop rotation", "growing different crops in sequence on the same land"),
         ("a silo", "a tall store for grain or feed"),
         ("tillage", "preparing soil by digging or ploughing"),
         ("a cover crop", "a plant grown to protect and enrich the soil"),
         ("drip irrigation", "watering plants slowly at their roots"))),
    DomainGrammar(
        "aviation", "airport", ("pilot", "dispatcher", "mechanic", "air traffic controller"),
        ("jet engine", "landing gear", "flight plan", "runway light", "fuel truck",
         "cargo hold"),
        (("fuel burn", "kilograms"), ("delay", "minutes"), ("altitude", "feet"),
         ("load factor", "percent")),
        ("refuelled", "cleared", "inspected", "rerouted", "boarded"),
        (("a go-around", "an aborted landing followed by another approach"),
         ("a notam", "a notice that warns pilots of hazards"),
         ("the flight envelope", "the limits of speed and altitude for safe flight"),
         ("a squawk code", "a four digit number that identifies a plane on radar"),
         ("an alternate", "an airport to divert to if the destination closes"))),
    DomainGrammar(
        "shipping", "port", ("harbour master", "deckhand", "freight broker", "crane operator"),
        ("container vessel", "bulk carrier", "reefer box", "gantry crane", "bill of lading",
         "berth"),
        (("cargo volume", "containers"), ("transit time", "days"), ("draft", "metres"),
         ("freight rate", "euros per box")),
        ("loaded", "berthed", "cleared", "chartered", "unloaded"),
        (("demurrage", "a fee for keeping a ship or container too long"),
         ("a bill of lading", "the receipt that proves goods were shipped"),
         ("ballast", "weight carried low in a ship to keep it stable"),
         ("a teu", "a twenty foot container used to measure capacity"),
         ("transshipment", "moving cargo from one vessel to another"))),
    DomainGrammar(
        "telecom", "exchange", ("network engineer", "field technician", "planner", "noc analyst"),
        ("fibre link", "cell tower", "core router", "base station", "sim card",
         "backhaul circuit"),
        (("latency", "milliseconds"), ("packet loss", "percent"), ("bandwidth", "gigabits"),
         ("uptime", "percent")),
        ("provisioned", "rerouted", "upgraded", "patched", "throttled"),
        (("latency", "the delay before data starts to arrive"),
         ("jitter", "the variation in delay between packets"),
         ("a handover", "moving a call from one cell to another"),
         ("backhaul", "the link from a cell site to the core network"),
         ("roaming", "using a network abroad through a partner operator"))),
)

DEMO_DOMAINS: tuple[str, ...] = tuple(g.name for g in DOMAIN_GRAMMARS)


def _domain_sentence(g: DomainGrammar, rng: random.Random) -> str:
    """One sentence in the domain's own register; facts recur so they can be learnt."""
    kind = rng.randrange(6)
    place = rng.choice(PLACES)
    entity = rng.choice(g.entities)
    metric, unit = rng.choice(g.metrics)
    if kind == 0:
        return (f"At the {place} {g.site}, the {metric} of the {entity} was "
                f"{rng.randint(2, 99)} {unit} in {rng.choice(MONTHS)}.")
    if kind == 1:
        return (f"The {rng.choice(g.roles)} {rng.choice(g.actions)} the {entity} "
                f"before the {metric} reached {rng.randint(2, 99)} {unit}.")
    if kind == 2:
        term, definition = rng.choice(g.facts)
        return f"In {g.name}, {term} is {definition}."
    if kind == 3:
        term, definition = rng.choice(g.facts)
        return f"Every {rng.choice(g.roles)} knows that {term} is {definition}."
    if kind == 4:
        return (f"{rng.choice(PEOPLE)}, the {rng.choice(g.roles)} at {place}, "
                f"{rng.choice(g.actions)} the {entity} on {rng.choice(MONTHS)} "
                f"{rng.randint(1, 28)}.")
    return (f"The {place} {g.site} reported that the {metric} stayed near "
            f"{rng.randint(2, 99)} {unit} after the {entity} was {rng.choice(g.actions)}.")


def _generic_sentence(rng: random.Random) -> str:
    """A neutral sentence that uses some domain's words without its domain grammar."""
    g = rng.choice(DOMAIN_GRAMMARS)
    kind = rng.randrange(4)
    if kind == 0:
        return f"{rng.choice(PEOPLE)} read a report about the {rng.choice(g.entities)}."
    if kind == 1:
        metric, unit = rng.choice(g.metrics)
        return f"The word {metric} is often measured in {unit}."
    if kind == 2:
        return (f"A {rng.choice(g.roles)} from {rng.choice(PLACES)} visited the "
                f"{g.site} in {rng.choice(MONTHS)}.")
    term, _ = rng.choice(g.facts)
    return f"People in {g.name} often talk about {term} and the {rng.choice(g.entities)}."


def _paragraph(sentence: list[str]) -> str:
    return " ".join(sentence)


def domain_rows(g: DomainGrammar, count: int, seed: int) -> list[dict[str, str]]:
    """``count`` text rows of 3 to 6 domain sentences each, reproducible from ``seed``."""
    rng = random.Random(f"{g.name}:{seed}")
    return [{"text": _paragraph([_domain_sentence(g, rng) for _ in range(rng.randint(3, 6))])}
            for _ in range(count)]


def _mixed_sentence(rng: random.Random) -> str:
    """Half neutral, half from a random domain: the base learns grammar and words of
    every industry a little, and each peer's fine-tuning then specialises it."""
    if rng.random() < 0.5:
        return _generic_sentence(rng)
    return _domain_sentence(rng.choice(DOMAIN_GRAMMARS), rng)


def generic_rows(count: int, seed: int) -> list[dict[str, str]]:
    """``count`` rows of mixed sentences for base pre-training (own seed: no overlap)."""
    rng = random.Random(f"generic:{seed}")
    return [{"text": _paragraph([_mixed_sentence(rng) for _ in range(rng.randint(3, 6))])}
            for _ in range(count)]


TRAIN_ROWS_PER_DOMAIN = 400
EVAL_ROWS_PER_DOMAIN = 40
GENERIC_ROWS = 1500


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_corpus(out_dir: Path) -> None:
    """Write ``generic.jsonl`` and ``<domain>.train.jsonl`` / ``<domain>.eval.jsonl``.

    Train and eval rows come from different seeds, so eval sentences are new
    combinations of the same grammar and facts: held out, yet learnable.
    """
    write_jsonl(out_dir / "generic.jsonl", generic_rows(GENERIC_ROWS, seed=1))
    for g in DOMAIN_GRAMMARS:
        write_jsonl(out_dir / f"{g.name}.train.jsonl", domain_rows(g, TRAIN_ROWS_PER_DOMAIN, 1))
        write_jsonl(out_dir / f"{g.name}.eval.jsonl", domain_rows(g, EVAL_ROWS_PER_DOMAIN, 2))
    (out_dir / "VERSION").write_text(CORPUS_VERSION + "\n", encoding="utf-8")


if __name__ == "__main__":
    generate_corpus(Path(__file__).resolve().parent / "demo_data")
