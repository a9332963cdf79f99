"""The README's second set-up command, run as a user runs it."""

import json
import subprocess
import sys


def test_inferline_demo_runs_the_platform_and_prints_a_prediction(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "inferline", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "$ inferline up" in result.stdout
    assert "iris version 1: ModelAvailable" in result.stdout
    assert "x-seldon-route: :iris_1:" in result.stdout
    start = result.stdout.index('{\n  "model_name"')
    response, _ = json.JSONDecoder().raw_decode(result.stdout, start)
    # Served by the scheduler-placed version 1 of the model, through the router.
    assert response["model_name"] == "iris_1"
    # A setosa and a virginica flower.
    assert response["outputs"][0]["data"] == [0, 2]
    # Ctrl-C (SIGINT) stopped everything cleanly.
    assert "stopping inferline" in result.stdout
