"""The committed Postman collection is the one scripts/postman.py generates from the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "postman.py"
COMMITTED = ROOT / "docs" / "proctor.postman_collection.json"
REGENERATE = ".venv/bin/python scripts/postman.py"


def generate() -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "-o", "-"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_postman_collection_matches_the_api() -> None:
    assert generate() == COMMITTED.read_text(), (
        f"{COMMITTED.relative_to(ROOT)} is out of date with the API: run `{REGENERATE}` "
        "and commit the result"
    )


def test_postman_collection_is_stable_and_has_one_request_per_operation() -> None:
    first, second = generate(), generate()
    collection = json.loads(first)

    assert first == second
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    assert collection["auth"]["bearer"][0]["value"] == "{{token}}"
    requests = [item for folder in collection["item"] for item in folder["item"]]
    ids = [item["id"] for item in requests]
    assert len(ids) == len(set(ids))
    names = {(r["request"]["method"], r["request"]["url"]["raw"]) for r in requests}
    assert ("POST", "{{baseUrl}}/api/v1/jobs/batch") in names
    assert ("GET", "{{baseUrl}}/api/v1/jobs/:job_id/result") in names
    assert ("GET", "{{baseUrl}}/api/v1/signing-key") in names
    health = next(r for r in requests if r["request"]["url"]["raw"].endswith("/healthz"))
    assert health["request"]["auth"] == {"type": "noauth"}
