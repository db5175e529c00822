"""bench.offsite's report: every loss, every target and the machine line are in the table."""

from __future__ import annotations

from bench.offsite import TARGETS, table


def test_the_table_shows_each_model_each_target_bytes_and_memory() -> None:
    losses = {
        "full_zero_shot": 0.89,
        "emulator_zero_shot": 0.96,
        "emulator_tuned": 0.74,
        "plugged_in": 0.7426,
        "central_lora": 0.709,
    }
    summary = {k: 1.0 for k in TARGETS} | {
        "bytes_once_package_per_member": 3_000_000,
        "bytes_full_model_weights": 4_000_000,
        "bytes_per_round_per_member": 3_545_000.0,
        "bytes_per_round_owner_received": 5e6,
    }
    memory = {
        "emulator_adapters": {
            "peak_rss_increase_mib": 40.0,
            "parameters": 10,
            "trained_parameters": 5,
            "weights_grads_adam_mib": 1.0,
        }
    }
    result = {
        "eval_loss": losses,
        "summary": summary,
        "memory": memory,
        "machine": {
            "cpu": "cpu",
            "cpu_count": 2,
            "torch_threads": 1,
            "python": "3",
            "versions": {"torch": "2"},
        },
    }
    text = table(result)
    assert all(name in text for name in losses)
    assert "0.7426" in text
    assert "(target <= 1.05)" in text and "(target >= 1.05)" in text and "(target < 1)" in text
    assert "3,000,000" in text and "emulator_adapters" in text and "torch 2" in text
