"""`bash bench/gpu_check.sh`: the MFU arithmetic on hand-computed figures, and part 1 (step throughput) on the CPU
with a tiny random Llama; the GPU figures themselves need a GPU (``bench/results/gpu_check.json``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from asu.recipes import get_recipe
from bench.gpu_check import (
    format_markdown,
    long_items,
    mfu,
    peak_tflops,
    step_flops,
    step_throughput,
    tokenizer_folder,
)
from bench.step import SYNTHETIC_SIZES


def test_mfu_arithmetic_on_hand_computed_figures():
    # N = 1e6 parameters, 1000 trained tokens: 6 * 1e6 * 1000 = 6e9 FLOPs; in 0.01 s on a 1e12 FLOP/s peak: 60%
    assert step_flops(1e6, 1000) == 6e9
    assert mfu(6e9, 0.01, 1.0) == pytest.approx(0.6)
    # a forward-only teacher pass over 500 more tokens adds 2 * 1e6 * 500 = 1e9 FLOPs
    assert step_flops(1e6, 1000, 500) == 7e9
    assert mfu(step_flops(1e6, 1000, 500), 0.01, 1.0) == pytest.approx(0.7)
    assert mfu(6e9, 0.01, None) is None  # unknown GPU: no MFU


def test_peak_table_reads_device_names():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.5
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA H100 NVL") is None and peak_tflops("NVIDIA GeForce RTX 4090") is None


def test_step_part_reports_throughput_and_mfu(tmp_path):
    folder = tokenizer_folder("tiny", tmp_path)
    config = replace(get_recipe("embedded"), batch_size=2, max_length=64)
    forget, retain = long_items(2, 0, 400), long_items(2, 4000, 400)
    r = step_throughput(folder, forget, retain, config, synthetic="llama-tiny", steps=1, warmup=0, peak=1.0)
    kinds = {"plain", "asu_frozen_copy", "asu_precomputed"}
    assert r["device"] == "cpu" and r["peak_tflops"] == 1.0 and r["peak_source"] == "given"
    assert set(r["mfu"]) == set(r["tflops"]) == set(r["tokens_per_second"]) == set(r["flops_per_step"]) == kinds
    # long items are cut at max_length: 2 x 64 tokens on each side, no padding
    assert r["tokens"] == {"forget": 128, "retain": 128, "forget_padded": 128, "retain_padded": 128}
    n = r["parameters"] - 32000 * SYNTHETIC_SIZES["llama-tiny"][0]  # the input embedding is a lookup
    assert r["flop_parameters"] == n
    assert r["flops_per_step"]["plain"] == r["flops_per_step"]["asu_precomputed"] == 6 * n * 256
    assert r["flops_per_step"]["asu_frozen_copy"] == 6 * n * 256 + 2 * n * 128  # teacher forward on the forget batch
    for kind in kinds:
        seconds = r["median_seconds"][kind]
        assert r["mfu"][kind] == pytest.approx(r["flops_per_step"][kind] / seconds / 1e12)
        assert r["tokens_per_second"][kind] == pytest.approx(256 / seconds)
    assert r["goals"]["precomputed_mfu"] == r["mfu"]["asu_precomputed"]
    assert r["goals"]["precomputed_ratio"] == r["ratio_to_plain"]["asu_precomputed"]
    json.dumps(r)  # the results file takes it as it is
    report = format_markdown({"parts": {"step": {"status": "done", "shapes": {"long": r}}}})
    assert "| asu_precomputed |" in report and "TFLOP/s" in report
    # without a peak (a CPU, an unknown GPU) the MFU is left out, with the reason
    r = step_throughput(folder, forget, retain, config, synthetic="llama-tiny", steps=1, warmup=0)
    assert r["mfu"]["plain"] is None and "no bf16 peak" in r["mfu_not_computed"]
