"""The manual-round flow runs under Prefect's test harness and returns references, not live objects."""

import json


def test_unlearning_round_flow(prefect_harness, tiny_model_dir, tiny_sets, tmp_path):
    from flows.round import unlearning_round

    files = []
    for name, items in zip(("forget", "retain"), tiny_sets, strict=True):
        files.append(tmp_path / f"{name}.jsonl")
        files[-1].write_text("\n".join(json.dumps(it) for it in items))
    state = unlearning_round(
        str(tiny_model_dir),
        str(files[0]),
        str(files[1]),
        str(tmp_path / "out"),
        overrides={"epochs": 1},
        return_state=True,
    )
    assert state.is_completed()
    result = state.result()
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert result["model_dir"] == str(tmp_path / "out") and result["metrics"]["optimizer_steps"] > 0
    bad = unlearning_round(
        str(tmp_path / "missing"), str(files[0]), str(files[1]), str(tmp_path / "bad"), return_state=True
    )
    assert bad.is_failed()
