"""bench.shapes: adapter sizes from real model configs and the bytes model per round."""

from __future__ import annotations

import pytest

from bench.shapes import SHAPES, fits_one_blob, measure_adapter, run_secagg, upload_bytes


def _shape(name: str):
    return next(shape for shape in SHAPES if shape.name == name)


def test_qwen_half_b_all_linear_r16_is_the_8_8_m_vector_of_the_secagg_rows() -> None:
    row = measure_adapter(_shape("Qwen2.5-0.5B"), "all-linear r16")
    assert row["adapter_values"] == 8_798_208  # 24 layers x 366,592
    assert row["with_exp_avg_values"] == 2 * 8_798_208
    assert row["targets"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                              "up_proj", "v_proj"]


def test_daemon_default_adapts_q_and_v_at_rank_8_on_llama() -> None:
    row = measure_adapter(_shape("Llama-3.2-1B"), "daemon default")
    assert row["targets"] == ["q_proj", "v_proj"]
    assert row["adapter_values"] == 16 * 8 * ((2048 + 2048) + (2048 + 512))


def test_upload_model_matches_bench_secagg_member_replays_to_the_byte() -> None:
    """Measured 2026-12-04: v3 591,254 B at 100 k and 5,385,237 B at 1 M values;
    v2 1,641,990 B and 16,089,610 B (k = 4), each one UPLOAD message. Streamed (one
    signed chunk per 128 ciphertexts, 8 bytes of index and count each), the same
    uploads are 8 bytes more per chunk: v2 at 1 M is 245 ciphertexts in 2 chunks."""
    assert upload_bytes(100_000, 4)["secure_v3"] == 591_254 + 8
    assert upload_bytes(1_000_000, 4)["secure_v3"] == 5_385_237 + 8
    assert upload_bytes(100_000, 4)["secure_v2"] == 1_641_990 + 8
    assert upload_bytes(1_000_000, 4)["secure_v2"] == 16_089_610 + 8 + 223
    assert upload_bytes(1_000_000, 4)["plain"] == 3 * (16 + 4_000_000)


def test_an_8b_all_linear_adapter_with_exp_avg_fits_in_streamed_chunks_under_both() -> None:
    """Before streaming, v2's 1.35 GB UPLOAD exceeded the 512 MiB blob limit; each chunk
    is now at most 128 ciphertexts (8.4 MB), and plain's 336 MB vector still fits."""
    assert fits_one_blob(83_886_080, 4) == {"plain": True, "secure_v2": True, "secure_v3": True}
    assert not fits_one_blob(200_000_000, 4)["plain"]


@pytest.mark.slow
def test_a_measured_v3_round_uploads_what_the_model_predicts() -> None:
    measured = run_secagg(300_000, 4)
    assert measured["upload_bytes_measured"] == upload_bytes(300_000, 4)["secure_v3"]
