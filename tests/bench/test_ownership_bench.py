"""bench.ownership's attacks and report: pruning prunes what it says, the table shows targets."""

from __future__ import annotations

import torch

from bench.ownership import TARGETS, table
from bench.ownership_attacks import prune


def test_pruning_zeroes_the_smallest_fifth_of_all_weights_and_keeps_the_rest() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.LayerNorm(30),
                                torch.nn.Linear(30, 5))
    pruned = prune(model, 0.2)
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    after = torch.cat([p.detach().reshape(-1) for p in pruned.parameters()])
    zeroed = after == 0
    assert abs(float(zeroed.float().mean()) - 0.2) < 0.01
    assert float(before[zeroed].abs().max()) <= float(before[~zeroed].abs().min())
    assert torch.equal(after[~zeroed], before[~zeroed])
    assert not torch.equal(torch.cat([p.reshape(-1) for p in model.parameters()]), after)


def test_the_table_shows_every_member_and_each_summary_against_its_target() -> None:
    member = {"member": "peer-00", "key_id": "abc", "bits_detected_after_federation": 1.0,
              "bits_detected_after_theft": {"full-fine-tune": 1.0, "lora+norms": 0.7},
              "bits_detected_after_pruning": 1.0, "bits_detected_unmarked": 0.5}
    result = {"members": [member], "summary": {k: 1.0 for k in TARGETS},
              "union_eval_loss": {"marked": 0.7}, "thief_domain_eval_loss": {"before": 1.0},
              "machine": {"cpu": "cpu", "cpu_count": 2, "torch_threads": 1, "python": "3",
                          "versions": {"torch": "2"}}}
    text = table(result)
    assert "peer-00" in text and "0.700" in text
    assert "(target >= 0.95)" in text and "(target <= 1.01)" in text
    assert "triggers: off" in text
    member.update({"trigger_accuracy_after_federation": 0.875,
                   "trigger_accuracy_after_theft": {"full-fine-tune": 0.625, "lora+norms": 0.0},
                   "trigger_accuracy_unmarked": 0.0})
    assert "triggers: 0.875 0.625 0.000 0.000" in table(result)
