#!/usr/bin/env python3
"""Write a Postman collection (v2.1) of proctor's API, generated from its OpenAPI document.

    .venv/bin/python scripts/postman.py            # rewrites docs/proctor.postman_collection.json
    .venv/bin/python scripts/postman.py --check    # exit 1 if the committed file is stale
    .venv/bin/python scripts/postman.py -o -       # print it

The output is deterministic: operations in path order, ids derived from operation ids
(uuid5), so it only changes when the API does. Bearer auth is set on the collection
with the `{{baseUrl}}` and `{{token}}` variables; endpoints without auth opt out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "proctor.postman_collection.json"
SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/proctor/postman")
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
METHOD_ORDER = ("get", "post", "put", "patch", "delete")
# Example values of form fields and parameters, by name; anything else gets "".
EXAMPLES: dict[str, str] = {
    "dataset": "breast-cancer",
    "timeout": "600",
    "name": "my-model",
    "callback_url": "https://example.org/proctor-hook",
    "gpus": "0",
    "entries": json.dumps([{"name": "first", "dataset": "breast-cancer"}, {"timeout": 600}]),
    "status": "succeeded",
    "limit": "50",
    "cursor": "",
    "user": "alice",
    "stream": "run",
    "follow": "false",
}
PATH_VARIABLES = {"job_id": "jobId"}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, from an app on a throw-away home folder."""
    sys.path.insert(0, str(ROOT))
    from proctor.api.app import create_app
    from proctor.config import Settings

    with tempfile.TemporaryDirectory() as home:
        document: dict[str, Any] = create_app(Settings(home=Path(home))).openapi()
    return document


def collection(document: dict[str, Any]) -> dict[str, Any]:
    folders: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(document["paths"]):
        operations = document["paths"][path]
        for method in sorted(operations, key=METHOD_ORDER.index):
            operation = operations[method]
            tag = (operation.get("tags") or ["service"])[0]
            folders.setdefault(tag, []).append(request_item(path, method, operation))
    info = document["info"]
    return {
        "info": {
            "_postman_id": str(uuid.uuid5(NAMESPACE, "collection")),
            "name": f"{info['title']} {info['version']}",
            "description": (
                f"{info.get('summary', '')}\n\nGenerated from the OpenAPI document by "
                "scripts/postman.py. Set `baseUrl` and `token` (from `proctor user add`)."
            ),
            "schema": SCHEMA_URL,
        },
        "auth": {
            "type": "bearer",
            "bearer": [{"key": "token", "value": "{{token}}", "type": "string"}],
        },
        "variable": [
            {"key": "baseUrl", "value": DEFAULT_BASE_URL, "type": "string"},
            {"key": "token", "value": "", "type": "string"},
            {"key": "jobId", "value": "", "type": "string"},
        ],
        "item": [
            {"name": tag, "id": str(uuid.uuid5(NAMESPACE, f"folder:{tag}")), "item": items}
            for tag, items in sorted(folders.items())
        ],
    }


def request_item(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    parameters = operation.get("parameters", [])
    segments = [
        f":{part[1:-1]}" if part.startswith("{") else part for part in path.strip("/").split("/")
    ]
    url: dict[str, Any] = {
        "raw": "{{baseUrl}}/" + "/".join(segments),
        "host": ["{{baseUrl}}"],
        "path": segments,
    }
    query = [
        {
            "key": p["name"],
            "value": EXAMPLES.get(p["name"], ""),
            "description": p.get("description", ""),
            "disabled": not p.get("required", False),
        }
        for p in parameters
        if p["in"] == "query"
    ]
    if query:
        url["query"] = query
    variables = [
        {
            "key": p["name"],
            "value": "{{" + PATH_VARIABLES.get(p["name"], p["name"]) + "}}",
        }
        for p in parameters
        if p["in"] == "path"
    ]
    if variables:
        url["variable"] = variables
    request: dict[str, Any] = {
        "method": method.upper(),
        "header": [],
        "url": url,
        "description": (operation.get("description") or operation.get("summary") or "").strip(),
    }
    if "security" not in operation:
        request["auth"] = {"type": "noauth"}
    body = example_body(operation.get("requestBody"))
    if body is not None:
        request["body"] = body
    return {
        "name": operation.get("summary") or f"{method.upper()} {path}",
        "id": str(uuid.uuid5(NAMESPACE, operation["operationId"])),
        "request": request,
        "response": [],
    }


def example_body(request_body: dict[str, Any] | None) -> dict[str, Any] | None:
    if not request_body:
        return None
    content = request_body.get("content", {})
    if "multipart/form-data" in content:
        schema = content["multipart/form-data"]["schema"]
        required = set(schema.get("required", []))
        fields = []
        for name, prop in schema.get("properties", {}).items():
            is_file = prop.get("format") == "binary" or prop.get("items", {}).get("format")
            copies = 2 if prop.get("type") == "array" else 1
            for _ in range(copies):
                field: dict[str, Any] = {"key": name, "description": prop.get("description", "")}
                if is_file:
                    field.update(type="file", src=[])
                else:
                    field.update(type="text", value=EXAMPLES.get(name, ""))
                field["disabled"] = name not in required and not is_file
                fields.append(field)
        return {"mode": "formdata", "formdata": fields}
    if "application/json" in content:
        return {
            "mode": "raw",
            "raw": "{}",
            "options": {"raw": {"language": "json"}},
        }
    return None


def render() -> str:
    return json.dumps(collection(openapi_document()), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", default=str(OUTPUT), help="file to write, - for stdout")
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run scripts/postman.py", file=sys.stderr)
            return 1
        return 0
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
