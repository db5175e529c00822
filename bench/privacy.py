"""Privacy audit: what a federated model gives away about one peer's rows, with and without DP.

    python -m bench.privacy --json privacy.json [--quick]

Peer 0's training file gets canaries (random 6-digit secrets, each row repeated
``--repeats`` times). Every arm trains the same federation in process — each peer
``local_steps`` steps a round, then the whole federation averages the daemon's own
averaging vector (adapter and AdamW exp_avg, ``LocalTrainer.averaging_vector``) weighted
by row counts — and differs only in ``[privacy]``: off, or DP-SGD with the noise derived
for ε ∈ ``--epsilons`` over all its steps (δ = 1/n, the daemon's default). Every arm
trains on unpacked rows (DP needs them), so the arms differ in DP alone: batch
(``--batch-size``, the DP arms' expected Poisson batch), lr (``--lr``), seeds and steps
are every arm's, the references' included. The defaults, batch 128 (q ≈ 0.3 of a
peer's 400 rows) and a per-example clip of 0.5 (``--max-grad-norm``, the DP arms' only
own setting), are what made ε = 8 learn (docs/results.md): at batch 8 DP-SGD's noise
per coordinate was about 9× a clipped gradient's and the DP arms ended where the
untrained model starts.

On the final (averaged) model it measures, for peer 0's data (bench/privacy_audit.py):
exposure of each canary, the loss-threshold membership-inference AUC of training rows
against held-out rows, and the union eval loss of the quality benchmark (utility). A
canary repeated r times is a group of r rows: DP bounds it only at about r·ε.

Two non-private reference arms bound the utility from both sides, with bench.quality's
own ``run_local_only`` and ``run_centralised`` on the same data (canaries included),
model, unpacked rows, seeds and step budget: local-only (each peer trains alone for
``rounds × local_steps`` steps; union loss = the mean over peers) and centralised (one
trainer on the pooled rows, same steps, ``grad_accum = peers``). Each arm's
``gap_closed`` is bench.quality's: (local − arm) / (local − centralised). The untrained
model's union loss is reported beside them: on this small non-IID demo local-only can end
worse than where it started, which flatters every arm's ``gap_closed``; so each arm
also gets ``gap_closed_from_untrained`` = (untrained − arm) / (untrained − no-dp), the
share of what the non-private federation learns that the arm learns too.

Prints a table and writes JSON with the machine, versions, arms, references, settings and
a ``summary``: per arm ``epsilon_spent``, ``union_loss``, ``gap_closed``,
``gap_closed_from_untrained``, ``canary_exposure`` (mean rank exposure over the canaries,
bits), ``mia_auc``, and ``targets`` for the ε = 8 arm (issue #21: gap_closed ≥ 0.5, mia_auc ≤ 0.6).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedswarm.daemon.demo.local_federation import demo_model_cache_dir
from fedswarm.learning.demo_assets import DEMO_LORA_TARGETS, DEMO_LR, build_demo_model
from fedswarm.learning.dp_sgd import PerExampleGradients
from fedswarm.learning.examples import IGNORE_INDEX, Example, collate
from fedswarm.learning.settings import (
    DataSettings,
    LoraSettings,
    ModelSettings,
    PrivacySettings,
    TrainSettings,
)
from fedswarm.learning.trainer import LocalTrainer

from .privacy_audit import (
    SECRET_DIGITS,
    Canary,
    candidate_secrets,
    exposure_by_fit,
    exposure_by_rank,
    make_canaries,
    membership_auc,
)
from .quality_inprocess import run_centralised, run_local_only
from .quality_report import gap_closed, machine
from .quality_setup import (
    BenchData,
    Evaluator,
    PeerData,
    RunSettings,
    demo_data,
    make_trainer,
    with_pooled,
)

TARGET_EPSILON = 8.0  # issue #21's checks are made on this arm
TARGET_GAP_CLOSED = 0.5
TARGET_MIA_AUC = 0.6


@dataclass(frozen=True)
class AuditSettings:
    peers: int = 3
    rounds: int = 3
    local_steps: int = 15
    batch_size: int = 128  # every arm's; the DP arms' expected batch (q = 128 / rows)
    max_length: int = 128
    canaries: int = 4
    repeats: int = 10
    candidates: int = 1000
    # training rows scored for membership inference, and as many held out: at most the
    # held-out rows there are (the demo's 40 per domain)
    members: int = 200
    seed: int = 0
    accountant: str = "rdp"  # [privacy] accountant: the DP arms' σ is derived with it
    lr: float = DEMO_LR  # every arm's, references included
    # [privacy] max_grad_norm, the DP arms' per-example clip: below the median per-example
    # gradient norm of the demo's rows (about 0.78 untrained), so most rows are clipped
    max_grad_norm: float = 0.5


@dataclass
class ArmResult:
    arm: str
    target_epsilon: float | None
    epsilon_spent: float | None
    delta: float | None
    noise_multiplier: float | None
    exposure_rank: list[float]
    exposure_fit: list[float]
    membership_auc: float
    union_eval_loss: float
    train_s: float
    eval_loss_by_set: dict[str, float] = field(default_factory=dict)  # each eval set
    # per-example gradient norms of peer 0's first rows under the final model (gradient_norms)
    grad_norms: dict[str, float] = field(default_factory=dict)
    membership_rows: int = 0  # members scored, and as many held-out rows


@dataclass
class ReferenceResult:
    """A non-private reference arm: only its utility is compared."""

    arm: str
    union_eval_loss: float  # the mean over peers of each peer's union loss
    union_eval_loss_per_peer: list[float]
    train_s: float  # model loading included
    note: str | None
    eval_loss_by_set: dict[str, float] = field(default_factory=dict)  # mean over peers
    grad_norms: dict[str, float] = field(default_factory=dict)  # untrained only


GRAD_NORM_ROWS = 64


def gradient_norms(trainer: LocalTrainer, rows: int = GRAD_NORM_ROWS) -> dict[str, float]:
    """Percentiles of the L2 norm of each example's adapter gradient (what DP-SGD clips).

    The first ``rows`` training examples of ``trainer``, each example's loss the mean over
    its own tokens, exactly as ``dp_sgd.clipped_sum`` computes them before clipping.
    """
    trainable = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    per_example = PerExampleGradients(trainer.model, trainable, vectorised=True)
    examples = trainer.data.train[:rows]
    pad = int(trainer.tokenizer.pad_token_id)
    trainer.model.train()
    norms: list[float] = []
    for start in range(0, len(examples), 16):
        batch = {k: v.to(trainer.input_device)
                 for k, v in collate(examples[start:start + 16], pad).items()}
        grads, _ = per_example(batch)
        norms.extend(torch.stack([g.reshape(g.shape[0], -1).float().norm(dim=1)
                                  for g in grads.values()], dim=1).norm(dim=1).tolist())
    values = np.array(norms)
    return {"rows": float(len(values)), "p10": float(np.percentile(values, 10)),
            "median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def _with_canaries(train: Path, out: Path, canaries: list[Canary], repeats: int,
                   seed: int) -> Path:
    rows = [line for line in train.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows += [json.dumps({"text": c.text()}) for c in canaries for _ in range(repeats)]
    random.Random(seed).shuffle(rows)
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def _trainer(model_dir: Path, a: AuditSettings, train: Path, eval_path: Path, seed: int,
             epsilon: float | None) -> LocalTrainer:
    return LocalTrainer(
        ModelSettings(str(model_dir)),
        LoraSettings(target_modules=list(DEMO_LORA_TARGETS)),
        DataSettings(str(train), str(eval_path), max_length=a.max_length, packing=False),
        TrainSettings(local_steps=a.local_steps, batch_size=a.batch_size, lr=a.lr,
                      schedule="constant", total_steps=a.rounds * a.local_steps, seed=seed,
                      samples_per_round=0),
        privacy=PrivacySettings(enabled=epsilon is not None, target_epsilon=epsilon or 1.0,
                                accountant=a.accountant, max_grad_norm=a.max_grad_norm),
    )


def _federate(trainers: list[LocalTrainer], rounds: int) -> float:
    """Train and average the whole federation ``rounds`` times; returns training seconds."""
    weights = np.array([t.num_train_samples for t in trainers], dtype=np.float64)
    weights /= weights.sum()
    seconds = 0.0
    for _ in range(rounds):
        for t in trainers:
            seconds += t.train().seconds
        vectors = [t.averaging_vector(with_moments=True) for t in trainers]
        average = sum(w * v.astype(np.float64) for w, v in zip(weights, vectors, strict=True))
        for t in trainers:
            t.load_averaging_vector(np.asarray(average, dtype=np.float32), with_moments=True)
    return seconds


@torch.no_grad()
def _losses(trainer: LocalTrainer, texts: list[str], per_token: bool) -> np.ndarray:
    """Each text's summed (or, ``per_token``, mean) next-token loss under the model."""
    tok, model = trainer.tokenizer, trainer.model
    model.eval()
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    examples = [Example(ids, list(ids)) for ids in
                (bos + list(tok(t, add_special_tokens=False)["input_ids"])[:256] for t in texts)]
    out: list[float] = []
    for start in range(0, len(examples), 64):
        batch = {k: v.to(trainer.input_device) for k, v in
                 collate(examples[start:start + 64], int(tok.pad_token_id)).items()}
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels,
                                                ignore_index=IGNORE_INDEX, reduction="none")
        summed = nll.sum(dim=1)
        count = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
        out.extend((summed / count if per_token else summed).tolist())
    return np.array(out)


def _rows(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def run_arm(name: str, epsilon: float | None, model_dir: Path, a: AuditSettings,
            data: BenchData, peer0_train: Path, canaries: list[Canary],
            evaluator: Evaluator) -> ArmResult:
    trainers = [_trainer(model_dir, a, peer0_train if i == 0 else peer.train_path,
                         peer.eval_path, a.seed + i, epsilon)
                for i, peer in enumerate(data.peers)]
    train_s = _federate(trainers, a.rounds)
    victim = trainers[0]
    ranks, fits = [], []
    for index, canary in enumerate(canaries):
        guesses = candidate_secrets(canary, a.candidates, a.seed + 100 + index)
        scores = _losses(victim, [canary.text(g) for g in [canary.secret, *guesses]], False)
        ranks.append(exposure_by_rank(float(scores[0]), scores[1:], 10**SECRET_DIGITS))
        fits.append(exposure_by_fit(float(scores[0]), scores[1:]))
    secrets_text = {c.text() for c in canaries}
    members = [t for t in _rows(data.peers[0].train_path) if t not in secrets_text]
    held_out = _rows(data.peers[0].eval_path)
    n = min(a.members, len(members), len(held_out))
    rng = random.Random(a.seed)
    auc = membership_auc(_losses(victim, rng.sample(members, n), True),
                         _losses(victim, rng.sample(held_out, n), True))
    budget = victim.privacy
    losses = evaluator.evaluate(victim.adapter_state())
    norms = gradient_norms(victim)
    return ArmResult(
        arm=name, target_epsilon=epsilon,
        epsilon_spent=None if budget is None else budget.epsilon(),
        delta=None if budget is None else budget.plan.delta,
        noise_multiplier=None if budget is None else budget.plan.noise_multiplier,
        exposure_rank=ranks, exposure_fit=fits, membership_auc=auc,
        union_eval_loss=losses.union, train_s=train_s, eval_loss_by_set=losses.by_set,
        grad_norms=norms, membership_rows=n)


def audit_data(data: BenchData, peer0_train: Path, workdir: Path) -> BenchData:
    """``data`` with peer 0 training on ``peer0_train`` (its canaries), pooled anew."""
    peers = [PeerData(p.domain, peer0_train if i == 0 else p.train_path, p.eval_path)
             for i, p in enumerate(data.peers)]
    workdir.mkdir(parents=True, exist_ok=True)
    return with_pooled(workdir, peers, data.eval_all)


def run_references(model_dir: Path, a: AuditSettings, data: BenchData,
                   evaluator: Evaluator) -> list[ReferenceResult]:
    """The untrained model, and bench.quality's local-only and centralised arms.

    ``data`` is ``audit_data``'s (peer 0 with its canaries), so the references see the
    rows the federated arms see; rows are unpacked, as DP-SGD requires, and lr, batch,
    max length, seeds (``seed + peer``) and ``rounds × local_steps`` are the audit's.
    """
    settings = RunSettings(rounds=a.rounds, local_steps=a.local_steps, seed=a.seed, lr=a.lr,
                           batch_size=a.batch_size, max_length=a.max_length, packing=False)
    # The starting point, for reading the others: LoRA starts as the identity (B = 0).
    base = make_trainer(model_dir, settings, data.peers[0].train_path, data.peers[0].eval_path,
                        seed=a.seed)
    untrained = evaluator.evaluate(base.adapter_state())
    norms = gradient_norms(base)
    del base
    out = [ReferenceResult("untrained", untrained.union, [untrained.union], 0.0,
                           "the base model (LoRA initialised to the identity)",
                           untrained.by_set, norms)]
    for name, run in (("local-only", run_local_only), ("centralised", run_centralised)):
        arm = run(model_dir, settings, data, evaluator)
        out.append(ReferenceResult(name, arm.union, [p.union for p in arm.per_peer],
                                   arm.wall_s, arm.note, arm.by_set()))
    return out


def summarise(arms: list[ArmResult], references: list[ReferenceResult]) -> dict[str, Any]:
    """Issue #21's per-ε summary, and its ε = 8 targets (``None`` when ε = 8 did not run)."""
    refs = {r.arm: r.union_eval_loss for r in references}
    local, central = refs["local-only"], refs["centralised"]
    untrained = refs.get("untrained")
    no_dp = next((r.union_eval_loss for r in arms if r.target_epsilon is None), None)
    per_arm: dict[str, dict[str, Any]] = {
        r.arm: {
            "target_epsilon": r.target_epsilon,
            "epsilon_spent": r.epsilon_spent,
            "union_loss": r.union_eval_loss,
            "gap_closed": gap_closed(local, r.union_eval_loss, central),
            "gap_closed_from_untrained": (None if untrained is None or no_dp is None
                                          else gap_closed(untrained, r.union_eval_loss, no_dp)),
            "canary_exposure": float(np.mean(r.exposure_rank)),
            "canary_exposure_max": float(np.max(r.exposure_rank)),
            "canary_exposure_fit": float(np.mean(r.exposure_fit)),
            "mia_auc": r.membership_auc,
        }
        for r in arms
    }
    target = next((r.arm for r in arms if r.target_epsilon == TARGET_EPSILON), None)
    targets: dict[str, Any] = {"arm": target, "gap_closed>=0.5": None, "mia_auc<=0.6": None}
    if target is not None:
        gap = per_arm[target]["gap_closed"]
        targets["gap_closed>=0.5"] = gap is not None and gap >= TARGET_GAP_CLOSED
        targets["mia_auc<=0.6"] = per_arm[target]["mia_auc"] <= TARGET_MIA_AUC
    return {
        "untrained_union_loss": untrained,
        "no_dp_union_loss": no_dp,
        "local_only_union_loss": local,
        "centralised_union_loss": central,
        "arms": per_arm,
        "targets": targets,
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _table(arms: list[ArmResult], references: list[ReferenceResult],
           summary: dict[str, Any], a: AuditSettings) -> str:
    head = (f"{'arm':<11} {'ε spent':>8} {'σ':>6} {'exposure rank':>14} {'exposure fit':>13}"
            f" {'MIA AUC':>8} {'union loss':>11} {'gap closed':>11} {'from untr.':>11}"
            f" {'train s':>8}")
    lines = [head, "-" * len(head)]
    local, central = summary["local_only_union_loss"], summary["centralised_union_loss"]
    for ref in references:
        lines.append(f"{ref.arm:<11} {'-':>8} {'-':>6} {'-':>14} {'-':>13} {'-':>8}"
                     f" {ref.union_eval_loss:>11.4f}"
                     f" {_percent(gap_closed(local, ref.union_eval_loss, central)):>11}"
                     f" {'-':>11} {ref.train_s:>8.1f}")
    for r in arms:
        eps = "-" if r.epsilon_spent is None else f"{r.epsilon_spent:.2f}"
        sigma = "-" if r.noise_multiplier is None else f"{r.noise_multiplier:.2f}"
        gap = summary["arms"][r.arm]["gap_closed"]
        from_untrained = summary["arms"][r.arm]["gap_closed_from_untrained"]
        lines.append(f"{r.arm:<11} {eps:>8} {sigma:>6} {np.mean(r.exposure_rank):>14.2f}"
                     f" {np.mean(r.exposure_fit):>13.2f} {r.membership_auc:>8.3f}"
                     f" {r.union_eval_loss:>11.4f} {_percent(gap):>11}"
                     f" {_percent(from_untrained):>11} {r.train_s:>8.1f}")
    lines.append(f"exposure: mean over {a.canaries} canaries × {a.repeats} repeats, bits of "
                 f"{SECRET_DIGITS * np.log2(10):.1f} possible ({a.candidates} sampled "
                 f"candidates); MIA: {arms[0].membership_rows if arms else 0} train vs as "
                 "many held-out rows of peer 0")
    lines.append("gap closed: (local-only − arm) / (local-only − centralised) union loss; "
                 "from untr.: (untrained − arm) / (untrained − no-dp); references are "
                 "non-private, unpacked rows, same steps, batch and lr")
    lines.append(f"every arm: batch {a.batch_size} (the DP arms' expected Poisson batch), "
                 f"lr {a.lr:g}, {a.rounds} × {a.local_steps} steps; DP arms: per-example "
                 f"clip {a.max_grad_norm:g}, δ = 1/n, {a.accountant.upper()} accountant")
    targets = summary["targets"]
    if targets["arm"] is None:
        lines.append(f"targets: no ε = {TARGET_EPSILON:g} arm ran (--epsilons)")
    else:
        row = summary["arms"][targets["arm"]]
        no_dp = summary["arms"].get("no-dp")
        yes = {True: "yes", False: "NO"}
        line = (f"ε = {TARGET_EPSILON:g} targets: gap closed {_percent(row['gap_closed'])} "
                f"(>= {TARGET_GAP_CLOSED:.0%}: {yes[targets['gap_closed>=0.5']]}), "
                f"MIA AUC {row['mia_auc']:.3f} (<= {TARGET_MIA_AUC}: "
                f"{yes[targets['mia_auc<=0.6']]})")
        if no_dp is not None:
            line += (f"; no DP beside it: MIA AUC {no_dp['mia_auc']:.3f}, "
                     f"exposure {no_dp['canary_exposure']:.2f} bits")
        lines.append(line)
    return "\n".join(lines)


def _epsilons(text: str) -> list[float]:
    """``8``, or ``1,3,8``: one or more comma-separated ε."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number list: {text!r}") from exc
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"every ε must be positive: {text!r}")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", dest="json_path", help="write results here")
    parser.add_argument("--model", help="model dir (default: the demo model)")
    parser.add_argument("--epsilons", type=_epsilons, nargs="*", default=[[8.0, 3.0, 1.0]],
                        help="ε of the DP arms: 1,3,8 or 1 3 8 (default 8,3,1)")
    parser.add_argument("--rounds", type=int, default=AuditSettings.rounds)
    parser.add_argument("--local-steps", type=int, default=AuditSettings.local_steps)
    parser.add_argument("--repeats", type=int, default=AuditSettings.repeats)
    parser.add_argument("--batch-size", type=int, default=AuditSettings.batch_size,
                        help="every arm's batch size (the DP arms' expected Poisson batch)")
    parser.add_argument("--lr", type=float, default=AuditSettings.lr,
                        help="every arm's learning rate, references included")
    parser.add_argument("--max-grad-norm", type=float, default=AuditSettings.max_grad_norm,
                        help="the DP arms' per-example clip ([privacy] max_grad_norm)")
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 5 steps, 200 candidates (a smoke test, not an audit)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--accountant", choices=("rdp", "prv"), default="rdp",
                        help="Opacus accountant the DP arms derive σ with and count ε by")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shared: dict[str, Any] = {"repeats": args.repeats, "accountant": args.accountant,
                              "batch_size": args.batch_size, "lr": args.lr,
                              "max_grad_norm": args.max_grad_norm}
    a = AuditSettings(rounds=args.rounds, local_steps=args.local_steps, **shared)
    if args.quick:
        a = AuditSettings(rounds=2, local_steps=5, candidates=200, members=40, **shared)
    model_dir = Path(args.model) if args.model else build_demo_model(demo_model_cache_dir())
    with tempfile.TemporaryDirectory(prefix="fedswarm-privacy-") as work_dir:
        _run(args, a, model_dir, Path(work_dir))


def _run(args: argparse.Namespace, a: AuditSettings, model_dir: Path, work: Path) -> None:
    """The audit itself; ``work`` holds the run's data and is removed afterwards."""
    data = demo_data(work, a.peers, a.seed)
    canaries = make_canaries(a.canaries, a.seed)
    peer0_train = _with_canaries(data.peers[0].train_path, work / "peer0-canaries.jsonl",
                                 canaries, a.repeats, a.seed)
    evaluator = Evaluator(model_dir, RunSettings(rounds=a.rounds, local_steps=a.local_steps,
                                                 seed=a.seed), data)
    started = time.perf_counter()
    references = run_references(model_dir, a, audit_data(data, peer0_train, work / "audit"),
                                evaluator)
    arms = [run_arm("no-dp", None, model_dir, a, data, peer0_train, canaries, evaluator)]
    for epsilon in [e for group in args.epsilons for e in group]:
        arms.append(run_arm(f"eps-{epsilon:g}", epsilon, model_dir, a, data, peer0_train,
                            canaries, evaluator))
    summary = summarise(arms, references)
    result: dict[str, Any] = {
        "benchmark": "privacy", "machine": {**machine(), "opacus": _opacus_version()},
        "settings": asdict(a), "quick": args.quick, "wall_s": time.perf_counter() - started,
        "summary": summary, "references": [asdict(r) for r in references],
        "arms": [asdict(r) for r in arms],
    }
    print(_table(arms, references, summary, a))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2), encoding="utf-8")


def _opacus_version() -> str:
    import opacus

    return str(opacus.__version__)


if __name__ == "__main__":
    main()
