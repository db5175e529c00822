"""A trainer process killed with SIGKILL while saving leaves a loadable checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fedswarm.learning.checkpoint_files import LATEST
from fedswarm.learning.settings import DataSettings, LoraSettings, ModelSettings, TrainSettings
from fedswarm.learning.trainer import LocalTrainer

CHILD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from fedswarm.learning import *
    model, train, evalp, ckpt = sys.argv[1:5]
    t = LocalTrainer(ModelSettings(model), LoraSettings(r=4, alpha=8),
                     DataSettings(train, evalp, max_length=64), TrainSettings(batch_size=4))
    for rnd in range(1, 300):  # bounded: the parent kills us long before the end
        t.train(1)
        t.save_checkpoint(Path(ckpt), round=rnd)
""")


def _latest_round(ckpt: Path) -> int:
    try:
        return int((ckpt / LATEST).read_text().strip().split("-")[1])
    except (OSError, ValueError, IndexError):
        return 0


@pytest.mark.slow
def test_sigkill_during_save_leaves_previous_checkpoint_loadable(
        demo_model_dir: Path, demo_shard_dir: Path, tmp_path: Path) -> None:
    shard = next(demo_shard_dir.glob("peer-0-*"))
    ckpt = tmp_path / "ckpt"
    args = [str(demo_model_dir), str(shard / "train.jsonl"), str(shard / "eval.jsonl"), str(ckpt)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _latest_round(ckpt) < 3 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert _latest_round(ckpt) >= 3, "child never saved three checkpoints"
        # The child spends most of its time inside save_checkpoint, so this lands mid-write.
        time.sleep(0.13)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)

    trainer = LocalTrainer(ModelSettings(str(demo_model_dir)), LoraSettings(r=4, alpha=8),
                           DataSettings(args[1], args[2], max_length=64),
                           TrainSettings(batch_size=4))
    assert trainer.load_checkpoint(ckpt) >= 3
