"""MkDocs hook: the Reference pages, generated from the code at every build.

Settings from ``Settings`` (name, variable, type, default, constraints, description), metrics
from ``Metrics().declared``, the spec file's schema from ``ModelSpec``'s JSON schema, the HTTP
API from the service's own OpenAPI document, the command line from each command's
``--help``; the Performance page's table from ``bench/results/latest.md``. Nothing here is
copied by hand: a setting, metric or field added to the code is
on the next build's pages (``tests/test_docs_site.py`` checks every one is).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    ["prediction-service"],
    ["prediction-service", "serve"],
    ["prediction-service", "train"],
    ["prediction-service", "score"],
    ["prediction-service", "log", "export"],
    ["prediction-service", "specs"],
    ["prediction-service", "migrate"],
    ["train_housing.py"],
    ["train_iris.py"],
    ["run_api.py"],
]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _constraints(metadata: list[Any]) -> str:
    marks = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for item in metadata:
        for attr, mark in marks.items():
            if getattr(item, attr, None) is not None:
                out.append(f"{mark} {getattr(item, attr)}")
    return ", ".join(out)


def settings_page() -> str:
    from pydantic import AliasChoices
    from pydantic_core import PydanticUndefined

    from prediction_service.settings import Settings

    lines = [
        "# Settings",
        "",
        "Every setting of the service and the trainers, read from the environment (prefix "
        "`PREDICT_`). Generated from `prediction_service.settings.Settings`.",
        "",
        "| variable | type | default | constraints | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = alias.choices if isinstance(alias, AliasChoices) else [f"PREDICT_{name.upper()}"]
        variable = " or ".join(f"`{n}`" for n in names)
        kind = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
        kind = kind.replace("pydantic.types.", "").replace("<class '", "").replace("'>", "")
        default = "(computed)" if field.default is PydanticUndefined else f"`{field.default}`"
        if field.default is None:
            default = "unset"
        lines.append(
            f"| {variable} | `{_cell(kind)}` | {_cell(default)} "
            f"| {_constraints(field.metadata)} | {_cell(field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def metrics_page() -> str:
    from prometheus_client import CollectorRegistry

    from prediction_service.metrics import Metrics

    lines = [
        "# Metrics",
        "",
        "Every metric `/metrics` exposes, generated from `prediction_service.metrics.Metrics`. "
        "With one worker the process collector adds `process_*` (CPU, memory, file "
        "descriptors); with several, the `service_*` gauges sum the workers.",
        "",
        "| name | type | labels | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for d in Metrics(CollectorRegistry()).declared:
        labels = ", ".join(f"`{label}`" for label in d.labels)
        lines.append(f"| `{d.name}` | {d.type} | {labels} | {_cell(d.help)} |")
    return "\n".join(lines) + "\n"


def _schema_type(prop: dict[str, Any] | bool) -> str:
    if not isinstance(prop, dict):
        return "any"
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " or ".join(_schema_type(p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list of {_schema_type(prop.get('items', {}))}"
    if prop.get("type") == "object" and "additionalProperties" in prop:
        return f"map of {_schema_type(prop['additionalProperties'])}"
    if "enum" in prop:
        return " or ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    return str(prop.get("type", "any"))


def spec_page() -> str:
    from prediction_service.specs import ModelSpec

    schema = ModelSpec.model_json_schema()
    hidden = {n for n, f in ModelSpec.model_fields.items() if f.exclude}  # set by the loader
    lines = [
        "# Model spec",
        "",
        "The fields of a spec file (`config/models/*.yaml`), generated from the JSON schema "
        "of `prediction_service.specs.ModelSpec`. Unknown fields are refused.",
    ]
    keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength",
            "maxLength", "minItems", "maxItems", "pattern")  # fmt: skip
    for name, part in [("ModelSpec", schema), *sorted(schema.get("$defs", {}).items())]:
        lines += ["", f"## {name}", ""]
        if part.get("description"):
            lines += [part["description"].strip(), ""]
        required = set(part.get("required", ()))
        lines += ["| field | type | default | constraints | meaning |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for field, prop in part.get("properties", {}).items():
            if name == "ModelSpec" and field in hidden:
                continue
            limits = ", ".join(f"{k} {prop[k]}" for k in keys if k in prop)
            default = "required" if field in required else f"`{prop.get('default', '')}`"
            lines.append(
                f"| `{field}` | {_cell(_schema_type(prop))} | {_cell(default)} "
                f"| {_cell(limits)} | {_cell(prop.get('description', ''))} |"
            )
    return "\n".join(lines) + "\n"


def http_page() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            PREDICT_DATABASE_URL=f"sqlite:///{tmp}/predictions.db",
            PREDICT_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
            PREDICT_LOGS_DIR=tmp,
        )
        from prediction_service.api.app import create_app

        document = create_app().openapi()
    lines = [
        "# HTTP API",
        "",
        f"{document['info'].get('description', '')}",
        "",
        "Generated from the service's own OpenAPI document (`GET /openapi.json` on a running "
        "service, with the shipped specs; `/docs` renders it there).",
    ]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            lines += ["", f"## `{method.upper()} {path}`", "", op.get("summary", "")]
            if op.get("description"):
                lines += ["", op["description"]]
            replies = ", ".join(
                f"`{code}` {r.get('description', '')}"
                for code, r in op.get("responses", {}).items()
            )
            lines += ["", f"Replies: {replies}"]
    return "\n".join(lines) + "\n"


def cli_page() -> str:
    lines = [
        "# Command line",
        "",
        "Each command's `--help`, generated by running it.",
    ]
    for command in COMMANDS:
        if command[0] == "prediction-service":
            argv = [sys.executable, "-m", "prediction_service", *command[1:], "--help"]
        else:
            argv = [sys.executable, command[0], "--help"]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} --help failed: {out.stderr[-2000:]}")
        lines += ["", f"## `{' '.join(command)}`", "", "```text", out.stdout.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def shortcuts_page() -> str:
    from prediction_service import shortcuts

    return "# Measured shortcuts\n\nFrom `prediction_service/shortcuts.py`'s docstring.\n\n" + (
        (shortcuts.__doc__ or "").replace("``", "`")
    )


PAGES = {
    "shortcuts.md": shortcuts_page,
    "reference/settings.md": settings_page,
    "reference/metrics.md": metrics_page,
    "reference/spec.md": spec_page,
    "reference/http.md": http_page,
    "reference/cli.md": cli_page,
}


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """The Performance page shows the latest ``make bench`` table as the run wrote it."""
    if page.file.src_uri == "performance.md":
        latest = (ROOT / "bench" / "results" / "latest.md").read_text()
        markdown = markdown.replace("<!-- bench:latest -->", latest)
    return markdown


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files
