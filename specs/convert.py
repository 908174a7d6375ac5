"""`reconcile convert`: a Compose file's native stack document, once it validates as a stack."""

from __future__ import annotations

from pathlib import Path

from specs.compose import convert, is_compose
from specs.document import read_document
from specs.errors import SpecError, SpecErrors
from specs.loader import load_path


def native_document(path: Path) -> tuple[dict[str, object], tuple[SpecError, ...]]:
    """The native stack document of the Compose file at `path` and its warnings; SpecErrors
    when it is not a Compose file or does not make a valid stack (every error, located)."""
    document = read_document(path, str(path))
    if not isinstance(document.data, dict) or not is_compose(path, document.data):
        raise SpecErrors([SpecError(str(path), 0, 0, (), "not a Compose file: it has no top-level services:")])
    load_path(path)  # every check validate makes (the stack's own and cross checks), at the Compose fields
    compose = convert(path, document)
    return compose.native, compose.warnings
