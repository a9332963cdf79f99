"""The README's second set-up command, run as a user runs it."""

import json
import subprocess
import sys


def test_inferline_demo_serves_iris_and_prints_a_prediction(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "inferline", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "inferline serve" in result.stdout
    response = json.loads(result.stdout[result.stdout.index('{\n  "model_name"') :])
    assert response["model_name"] == "iris"
    assert response["id"] == "demo-1"
    # A setosa and a virginica flower.
    assert response["outputs"][0]["data"] == [0, 2]
    assert (tmp_path / "iris" / "model-settings.json").exists()
