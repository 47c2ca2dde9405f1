"""The README performance table is the one bench/perf_table.py renders from the newest results file."""
from __future__ import annotations

import json
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "bench"))
import perf_table  # noqa: E402


def test_readme_table_matches_the_newest_results_file():
    text = perf_table.README.read_text()
    assert perf_table.readme_block(text) == perf_table.table(), \
        "README.md performance table is stale: run python bench/perf_table.py --write"


def summary(date: str, sr: float) -> dict:
    return {"format": "gpu_check/2", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.x", "date": date,
            "rows": [{"config": "eager bf16", "dit_256p_8steps_s": 2.4, "sr_1080p_step_s": sr, "decode_1080p_s": 5.0,
                      "e2e_1080p_s": 2.4 + 5 * sr + 5.0, "dit_peak_gb": 31.0, "sr_peak_gb": 47.25}],
            "e2e_measured": {"e2e_1080p_s": 44.0}}


def test_newest_dated_file_wins_over_older_and_legacy_files(tmp_path):
    (tmp_path / "gpu_check_h200_run4.json").write_text(json.dumps({"sdpa": {}}))  # legacy: no date
    (tmp_path / "gpu_check_h100_2026-12-01T0900.json").write_text(json.dumps(summary("2026-12-01T0900", 7.0)))
    (tmp_path / "gpu_check_h100_2026-12-02T0100.json").write_text(json.dumps(summary("2026-12-02T0100", 6.0)))
    assert perf_table.newest(tmp_path).name == "gpu_check_h100_2026-12-02T0100.json"


def test_rows_show_seconds_ratio_and_peak_memory():
    out = perf_table.render(summary("2026-12-02T0100", 6.2), "x.json")
    row = [line for line in out.splitlines() if line.startswith("| eager bf16")][0]
    assert "2.40 s (1.50x)" in row and "6.20 s (1.00x)" in row and "5.00 s (0.86x)" in row
    assert "38.40 s (1.00x)" in row and "47.2 GB" in row
    assert "one measured run: 44.00 s" in out


def test_tiny_code_path_runs_never_become_the_readme_table(tmp_path):
    (tmp_path / "gpu_check_h100_2026-12-01T0900.json").write_text(json.dumps(summary("2026-12-01T0900", 7.0)))
    tiny = dict(summary("2026-12-03T0100", 0.1), gpu="cpu_tiny", tiny=True)
    (tmp_path / "gpu_check_cpu_tiny_2026-12-03T0100.json").write_text(json.dumps(tiny))
    gpu_tiny = dict(summary("2026-12-04T0100", 0.1), tiny=True)  # --tiny on a GPU
    (tmp_path / "gpu_check_h100_2026-12-04T0100.json").write_text(json.dumps(gpu_tiny))
    assert perf_table.newest(tmp_path).name == "gpu_check_h100_2026-12-01T0900.json"


def test_missing_results_folder_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="gpu_check.sh"):
        perf_table.newest(tmp_path)


@pytest.mark.slow
def test_gpu_check_tiny_cpu_run_writes_a_results_file_the_table_reads(tmp_path, repo_root):
    """The prepared GPU script's code path on tiny models (CPU): rows, keys and the table."""
    import subprocess
    cmd = [sys.executable, "bench/gpu_check.py", "--tiny", "--device", "cpu", "--only", "eager,decode,fp8",
           "--budget-s", "3000", "--out-dir", str(tmp_path)]
    res = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=3000)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (path,) = tmp_path.glob("gpu_check_cpu_tiny_*.json")
    data = json.loads(path.read_text())
    for key in ("dit_256p_8steps_s", "sr_1080p_step_s", "decode_1080p_s", "e2e_1080p_s"):
        assert isinstance(data[key], float) and data[key] > 0, key
    configs = [r["config"] for r in data["rows"]]
    assert configs == ["eager bf16", "fp8_e4m3fn_fast"], configs
    assert all("ratio_to_reference" in r and "error" not in r for r in data["rows"])
    assert "fp8_e4m3fn_fast" in perf_table.render(data, path.name)
    assert data["tiny"] is True and perf_table.is_code_path_check(data)
