"""`{{secrets.NAME}}` placeholders, resolved from `SECRET_*` variables or files in `SECRETS_DIR`."""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servicenow_worker.errors import InputError

PLACEHOLDER = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MASK = "***"


@dataclass(frozen=True)
class SecretStore:
    """Where secrets come from: the environment (read once at start), then a directory of files."""

    environment: Mapping[str, str]
    directory: Path | None = None
    env_prefix: str = "SECRET_"

    def where_to_set(self, name: str) -> str:
        places = f"the environment variable {self.env_prefix}{name}"
        return places + (f" or the file {self.directory / name}" if self.directory else "")

    def lookup(self, name: str) -> str | None:
        value = self.environment.get(name)
        if value:
            return value
        if self.directory is None:
            return None
        try:
            # Docker and Kubernetes secret files usually end with one newline that is not part of it.
            text = (self.directory / name).read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return None
        return text.removesuffix("\n") or None


@dataclass
class ResolvedSecrets:
    """The secret values one job used: every message, log line and variable is masked with them."""

    values: set[str] = field(default_factory=set)

    def mask(self, text: str) -> str:
        return mask_values(text, self.values)

    def mask_data(self, value: Any) -> Any:
        """`value` with the secrets masked in every string it holds, keys included."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_data(k): self.mask_data(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_data(v) for v in value]
        return value


def mask_values(text: str, values: Iterable[str]) -> str:
    """`text` with each of `values` replaced by the mask."""
    # Longest first, so a secret that contains another is masked whole.
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def resolve_placeholders(value: Any, store: SecretStore, used: ResolvedSecrets, where: str) -> Any:
    """Return `value` with every placeholder in its strings replaced, recursing into lists and dicts."""
    if isinstance(value, str):
        return _resolve_string(value, store, used, where) if "{{" in value else value
    if isinstance(value, dict):
        return {k: resolve_placeholders(v, store, used, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_placeholders(v, store, used, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _resolve_string(text: str, store: SecretStore, used: ResolvedSecrets, where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        secret = store.lookup(name)
        if secret is None:
            raise InputError(
                where,
                f"refers to secret {name}, which is missing or empty: set {store.where_to_set(name)}",
            )
        used.values.add(secret)
        return secret

    return PLACEHOLDER.sub(replace, text)
