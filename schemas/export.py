"""Export JSON Schema files to ``schemas/json/``: ``python -m agentledger.schemas.export``.

One file per event type plus ``agent_event.json`` for the union. The files are committed
so non-Python producers can validate against them; a test checks they match the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from agentledger.schemas.events import EVENT_MODELS, json_schema

JSON_DIR = Path(__file__).parent / "json"


def generated() -> dict[str, str]:
    files: dict[str, Any] = {"agent_event.json": json_schema()}
    for event_type, model in EVENT_MODELS.items():
        files[f"{event_type.replace('.', '_')}.json"] = model.model_json_schema(by_alias=True)
    return {name: json.dumps(schema, indent=2, sort_keys=True) + "\n"
            for name, schema in files.items()}


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in generated().items():
        (JSON_DIR / name).write_text(text)
    print(f"wrote {len(generated())} schema files to {JSON_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
