"""A stack's models with their equal parts shared, for a process that keeps stacks for long: the
watch agent holds every file's spec in force between its passes.

Pydantic gives every model instance a set of its own naming the fields the file set
(`model_fields_set`): 216 bytes, 728 from five names on (a container's, once its defaults are
filled in). And equal parts of a file are distinct instances: a thousand containers with the
same `resources`, attached to the same network the same way, hold a thousand equal models.
Shared here: one set per distinct fields set, handed to `model_construct` (which keeps
the set it is given, as pydantic documents), and one instance per distinct model wherever its
values are hashable. The models are frozen, and pydantic copies a fields set before it adds
to it (`model_copy(update=...)`), so no instance can change another's.

Measured on the scale bench's stack of 1,000 containers (a port and limits each): its models
held 3.97 MiB, 2.04 shared; sharing them took 45-70 ms, loading the file 60-100 ms
(bench/README.md, "Scale")."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def shared(model: M) -> M:
    """An equal model (the same fields set in every part) whose equal parts are one object."""
    return _Sharing().model(model)


class _Sharing:
    def __init__(self) -> None:
        self._fields_sets: dict[frozenset[str], set[str]] = {}
        self._models: dict[tuple[object, ...], BaseModel] = {}

    def model(self, model: M) -> M:
        values = {name: self._value(value) for name, value in model}
        fields_set = frozenset(model.model_fields_set)
        # The type beside each value: 1, 1.0 and True are equal, and would be one key.
        key = (type(model), fields_set, *((name, type(value), value) for name, value in values.items()))
        try:
            found = self._models.get(key)
        except TypeError:  # a list or a mapping among the values: not shared
            return self._rebuilt(model, fields_set, values)
        if isinstance(found, type(model)):
            return found
        rebuilt = self._models[key] = self._rebuilt(model, fields_set, values)
        return rebuilt

    def _rebuilt(self, model: M, fields_set: frozenset[str], values: dict[str, object]) -> M:
        return type(model).model_construct(self._fields_sets.setdefault(fields_set, set(fields_set)), **values)

    def _value(self, value: object) -> object:
        if isinstance(value, BaseModel):
            return self.model(value)
        if isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
            return [self._value(item) for item in value]
        if isinstance(value, dict) and any(isinstance(item, BaseModel) for item in value.values()):
            return {name: self._value(item) for name, item in value.items()}
        return value
