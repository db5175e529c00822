"""The quality benchmark's shared ground: data layout, trainer settings and evaluation.

Every arm of the benchmark (local-only, centralised, and the federated ones) must
train with exactly the same settings the daemon uses for the demo, or the comparison
says nothing about fedswarm. So the settings are built in one place here, from the
same constants ``LocalFederation`` writes into each daemon's config.

Evaluation uses ``LocalTrainer`` itself (one per eval set, adapter swapped in with
``load_adapter_state``), so the loss reported is the loss the daemon would report.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fedswarm.learning.adapter_vector import state_fingerprint
from fedswarm.learning.demo_assets import (
    DEMO_LORA_TARGETS,
    DEMO_LR,
    DEMO_MAX_LENGTH,
    write_demo_shards,
)
from fedswarm.learning.demo_corpus import DOMAIN_GRAMMARS, domain_rows
from fedswarm.learning.errors import LearningError
from fedswarm.learning.fedmkt.errors import PublicDataError
from fedswarm.learning.fedmkt.public_data import content_sha256, load_public_dataset
from fedswarm.learning.screening.settings import ScreenSettings
from fedswarm.learning.settings import (
    AlignmentSettings,
    DataSettings,
    LoraSettings,
    ModelSettings,
    ScheduleName,
    TrainSettings,
)
from fedswarm.learning.trainer import LocalTrainer

BATCH_SIZE = 8  # LocalFederation's default batch size


class QualityBenchError(Exception):
    """The benchmark cannot run as asked (bad data folder, bad arguments, a failed arm)."""


@dataclass(frozen=True)
class PeerData:
    """One peer's private training file and the held-out eval file of its domain."""

    domain: str
    train_path: Path
    eval_path: Path


@dataclass(frozen=True)
class BenchData:
    """Per-peer shards plus the pooled files the centralised arm and the union eval use.

    ``public`` is the shared public set (``--public-share``): every arm, baselines
    included, mixes it into training as a daemon mixes ``[data.alignment]``, since every
    organisation could use a public set without federating.
    """

    peers: list[PeerData]
    pooled_train: Path
    union_eval: Path
    eval_all: Path | None
    public: AlignmentSettings | None = None

    @property
    def domains(self) -> list[str]:
        """Distinct domains in peer order (peers may share one)."""
        return list(dict.fromkeys(p.domain for p in self.peers))

    def eval_files(self) -> dict[str, Path]:
        """Eval set name → file: each domain, and ``eval_all`` when there is one."""
        files = {p.domain: p.eval_path for p in self.peers}
        if self.eval_all is not None:
            files["eval_all"] = self.eval_all
        return files


def _concat(paths: list[Path], out: Path) -> Path:
    with out.open("w", encoding="utf-8") as sink:
        for path in dict.fromkeys(paths):
            text = path.read_text(encoding="utf-8")
            sink.write(text if text.endswith("\n") or not text else text + "\n")
    return out


def demo_data(workdir: Path, n_peers: int, seed: int) -> BenchData:
    """The bundled non-IID shards (one domain per peer) and ``eval_all.jsonl``."""
    shards = write_demo_shards(workdir / "data", n_peers, seed=seed)
    peers = [PeerData(s.domain, s.train_path, s.eval_path) for s in shards]
    return with_pooled(workdir, peers, workdir / "data" / "eval_all.jsonl")


def folder_data(workdir: Path, folder: Path, n_peers: int) -> BenchData:
    """A user's data: ``NAME.train.jsonl`` + ``NAME.eval.jsonl`` pairs, one pair per peer.

    The first ``n_peers`` names in sorted order are used; fewer pairs than peers is an
    error rather than a silent change of the experiment.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise QualityBenchError(f"--data {folder}: not a directory")
    names = sorted(p.name[: -len(".train.jsonl")] for p in folder.glob("*.train.jsonl"))
    pairs = [n for n in names if (folder / f"{n}.eval.jsonl").is_file()]
    if len(pairs) < n_peers:
        raise QualityBenchError(
            f"--data {folder}: found {len(pairs)} NAME.train.jsonl/NAME.eval.jsonl pairs "
            f"({', '.join(pairs) or 'none'}), need one per peer ({n_peers})"
        )
    copy_dir = workdir / "data"
    copy_dir.mkdir(parents=True, exist_ok=True)
    peers = []
    for name in pairs[:n_peers]:
        train = shutil.copyfile(folder / f"{name}.train.jsonl", copy_dir / f"{name}.train.jsonl")
        evalf = shutil.copyfile(folder / f"{name}.eval.jsonl", copy_dir / f"{name}.eval.jsonl")
        peers.append(PeerData(name, Path(train), Path(evalf)))
    return with_pooled(workdir, peers, None)


PUBLIC_SEED = 3
"""The demo corpus draws train rows with seed 1 and eval rows with seed 2; public rows
with 3 are new sentences of the same domains, in no peer's shard and no eval set."""


def demo_public_set(workdir: Path, data: BenchData, rows_per_domain: int,
                    share: float) -> AlignmentSettings:
    """A public set of the peers' domains, ``rows_per_domain`` fresh rows each.

    It stands for the public text of a consortium's field (published reports, textbooks
    of the domain) that members agree on: written from the demo grammars with a seed no
    private shard or eval set uses, pinned by its content hash as ``[data.alignment]``
    requires.
    """
    grammars = {grammar.name: grammar for grammar in DOMAIN_GRAMMARS}
    unknown = [domain for domain in data.domains if domain not in grammars]
    if unknown:
        raise QualityBenchError(f"--public-share: no demo grammar for {unknown}; "
                                "with --data, give the public set with --public FILE")
    texts = [row["text"] for domain in data.domains
             for row in domain_rows(grammars[domain], rows_per_domain, PUBLIC_SEED)]
    path = workdir / "public.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts),
                    encoding="utf-8")
    return AlignmentSettings(str(path), content_sha256(texts), share)


def file_public_set(path: Path, share: float) -> AlignmentSettings:
    """A user's public set (``--public FILE``, JSONL ``{"text": ...}`` rows)."""
    try:
        dataset = load_public_dataset(str(path))
    except PublicDataError as exc:
        raise QualityBenchError(f"--public {path}: {exc}") from None
    return AlignmentSettings(str(path), content_sha256(dataset.texts), share)


def with_pooled(workdir: Path, peers: list[PeerData], eval_all: Path | None) -> BenchData:
    """``peers`` plus their pooled training file and union eval file, written in ``workdir``."""
    pooled = _concat([p.train_path for p in peers], workdir / "pooled.train.jsonl")
    union = _concat([p.eval_path for p in peers], workdir / "union.eval.jsonl")
    return BenchData(peers, pooled, union, eval_all)


@dataclass(frozen=True)
class RunSettings:
    """The knobs every arm shares: rounds × local steps per peer, seeds, lr, batch.

    ``fedprox_mu`` is part of the federated algorithm, so only the federated arms use
    it: its anchor is the last group average, and local-only or centralised training
    has none (anchoring them to the initial adapter would only handicap the baselines).

    ``average_optimizer_state`` is the daemon's ``[federation] average_optimizer_state``
    (default on): the federated arms average AdamW's moments with the adapter, through
    the same ``LocalTrainer.averaging_vector`` / ``load_averaging_vector`` a daemon uses.

    ``packing`` is ``[data] packing``: on in the quality benchmark (the daemon's default);
    the privacy audit turns it off, since DP-SGD needs one row per example, so that its
    non-private reference arms train on the same unpacked rows as its DP arms.

    ``freeze_lora_a``, ``group_momentum`` and ``scaffold`` are the daemon's
    ``[federation]`` levers for rounds far apart (federated arms only: the baselines
    train a plain LoRA adapter).
    """

    rounds: int
    local_steps: int
    seed: int = 0
    fedprox_mu: float = 0.0
    average_optimizer_state: bool = True
    freeze_lora_a: bool = False
    group_momentum: float = 0.0
    scaffold: bool = False
    lr: float = DEMO_LR
    batch_size: int = BATCH_SIZE
    max_length: int = DEMO_MAX_LENGTH
    packing: bool = True
    #: lr schedule of every arm over ``total_steps`` ([train] schedule); "constant" keeps
    #: the rate fixed, as every run before issue #28's schedule lever did.
    schedule: ScheduleName = "constant"

    @property
    def total_steps(self) -> int:
        return self.rounds * self.local_steps

    def train_schedule(self) -> dict[str, Any]:
        """[train] schedule and total_steps for this run (a decay spans the whole run)."""
        if self.schedule == "constant":
            return {"schedule": "constant"}
        return {"schedule": self.schedule, "total_steps": self.total_steps}


def make_trainer(model_dir: Path, settings: RunSettings, train_path: Path, eval_path: Path,
                 *, seed: int, grad_accum: int = 1, fedprox_mu: float = 0.0,
                 freeze_lora_a: bool = False, scaffold: bool = False,
                 screen: ScreenSettings | None = None,
                 alignment: AlignmentSettings | None = None) -> LocalTrainer:
    """A trainer configured exactly as ``LocalFederation`` configures each daemon.

    (constant lr after no warm-up, all-linear LoRA r=8, batch 8, max_length 128.)
    ``grad_accum`` is only used by the centralised arm, so that one model sees as many
    examples per optimiser step as the whole federation does; ``fedprox_mu`` only by
    the federated arms (see ``RunSettings``).
    """
    try:
        return LocalTrainer(
            ModelSettings(str(model_dir)),
            LoraSettings(target_modules=list(DEMO_LORA_TARGETS)),
            DataSettings(str(train_path), str(eval_path), max_length=settings.max_length,
                         packing=settings.packing),
            TrainSettings(local_steps=settings.local_steps, batch_size=settings.batch_size,
                          grad_accum=grad_accum, lr=settings.lr, seed=seed,
                          fedprox_mu=fedprox_mu, **settings.train_schedule()),
            freeze_lora_a=freeze_lora_a, scaffold=scaffold, screen=screen,
            alignment=alignment,
        )
    except (LearningError, ValueError, OSError) as exc:
        raise QualityBenchError(f"cannot set up a trainer on {train_path}: {exc}") from exc


@dataclass
class Losses:
    """Eval loss of one adapter on every eval set, plus the token-weighted union."""

    by_set: dict[str, float]
    union: float


class Evaluator:
    """One ``LocalTrainer`` per eval set; an adapter is swapped in and evaluated on each.

    Each trainer's *train* file is its eval file (it never trains), so building one
    costs a model load and a small tokenisation. Results are cached by adapter
    fingerprint: after a full-group average every peer holds the same adapter, and
    evaluating it once per peer would only cost time.

    A frozen-A adapter (B only: its A is the shared draw every frozen-A trainer makes)
    is evaluated on frozen-A trainers, built the first time one is asked for.
    """

    def __init__(self, model_dir: Path, settings: RunSettings, data: BenchData) -> None:
        self.domains = data.domains
        self._model_dir = model_dir
        self._settings = settings
        self._files = data.eval_files()
        self._trainers: dict[bool, dict[str, LocalTrainer]] = {}
        self._cache: dict[str, Losses] = {}

    def _trainers_for(self, frozen_a: bool) -> dict[str, LocalTrainer]:
        if frozen_a not in self._trainers:
            self._trainers[frozen_a] = {
                name: make_trainer(self._model_dir, self._settings, path, path,
                                   seed=self._settings.seed, freeze_lora_a=frozen_a)
                for name, path in self._files.items()
            }
        return self._trainers[frozen_a]

    def evaluate(self, state: dict[str, torch.Tensor]) -> Losses:
        key = state_fingerprint(state)
        if key in self._cache:
            return self._cache[key]
        frozen_a = not any(".lora_A." in name for name in state)
        by_set: dict[str, float] = {}
        weighted, tokens = 0.0, 0
        for name, trainer in self._trainers_for(frozen_a).items():
            trainer.load_adapter_state(state)
            report = trainer.evaluate()
            by_set[name] = report.loss
            if name in self.domains:
                weighted += report.loss * report.tokens
                tokens += report.tokens
        losses = Losses(by_set, weighted / tokens)
        self._cache[key] = losses
        return losses
