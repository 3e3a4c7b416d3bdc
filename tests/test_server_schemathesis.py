"""Schemathesis against a live loopback server: every documented operation, generated valid and
invalid requests, every check (server errors, status codes / bodies / headers vs the OpenAPI schema,
invalid data rejected, valid data accepted, auth not ignored, unsupported methods answered 405).

Bounded: a fixed seed and ``--max-examples`` give a few hundred requests (about 10 s on 2 cores).
The schemathesis CLI runs in its own process (its own GIL) against a uvicorn server in this one.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from serving_fixtures import HashEncoder, ServerThread, hashed_model_dir

pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency: pip install -e '.[dev]'")

from unisrec.serving.app import create_app  # noqa: E402
from unisrec.serving.recommender import Recommender  # noqa: E402

KEY = "schemathesis-key-0123456789"
# Statuses the schema cannot predict from the request alone: 422 unknown_items (catalogue membership),
# 413 too_much_text (total characters over all texts), 409 catalogue_full. Invalid data may also be
# refused by the body-size limit (413) before its schema is checked.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "409", "413", "422"]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]
"""


def test_schemathesis_finds_no_failures(tmp_path):
    rec = Recommender.from_pretrained(hashed_model_dir(tmp_path / "m"), text_encoder=HashEncoder())
    app = create_app(rec, api_key=KEY, max_history=50, max_k=50, max_texts=8, max_text_chars=2000,
                     max_body_bytes=64 * 1024, max_catalogue_items=400)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    with ServerThread(app) as url:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{url}/openapi.json",
             "--checks", "all", "--max-examples", "40", "--seed", "20220814", "--workers", "1",
             "--header", f"Authorization: Bearer {KEY}", "--request-timeout", "30", "--no-color"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )
        health = rec.num_items
    out = run.stdout + run.stderr
    (tmp_path / "schemathesis.log").write_text(out)
    assert run.returncode == 0, out[-6000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases, out[-3000:]
    assert int(cases.group(1)) >= 150 and cases.group(1) == cases.group(2), cases.group(0)
    # the four API operations were all tested (the demo page is not part of the schema)
    assert re.search(r"Tested:\s+4", out), out[-3000:]
    assert health >= 30  # the server survived: POST /items calls with the key may have added items
