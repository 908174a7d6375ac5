"""A stack's models with their equal parts shared, for a process that keeps stacks for long: the
watch agent holds every file's spec in force between its passes.

Pydantic gives every model instance a set of its own naming the fields the file set
(`model_fields_set`): 216 bytes, 728 from five names on (a container's, once its defaults are
filled in). And equal parts of a file are distinct instances: a thousand containers with the
same `resources`, attached to the same network the same way, hold a thousand equal models.
Shared here: one set per distinct fields set, handed to `model_construct` (which keeps the set
it is given, as pydantic documents), and one instance per distinct model wherever no list or
mapping is among its values (nor its parts'), told apart by its fields set and the type of
every value too (pydantic's `==` compares neither). Spec models are frozen, and pydantic copies
a fields set before it adds to it (`model_copy(update=...)`), so no instance can change
another's.

Measured on the scale bench's stack of 1,000 containers (a port and limits each): its models
held 3.97 MiB, 2.04 shared; sharing them took 45-70 ms, loading the file 60-100 ms
(bench/README.md, "Scale")."""

from __future__ import annotations

from typing import TypeVar, cast

from specs.model import SpecModel

M = TypeVar("M", bound=SpecModel)


def shared(model: M) -> M:
    """An equal model (the same fields set and the same types of values in every part) whose
    equal parts are one object."""
    return cast(M, _Sharing().model(model))  # a model of the same type: rebuilt, or found by its type


class _Sharing:
    def __init__(self) -> None:
        self._fields_sets: dict[frozenset[str], set[str]] = {}
        self._models: dict[tuple[object, ...], SpecModel] = {}

    def model(self, model: SpecModel) -> SpecModel:
        values = {name: self._value(value) for name, value in model}
        fields_set = frozenset(model.model_fields_set)
        key = (type(model), fields_set, *((name, _typed(value)) for name, value in values.items()))
        try:
            found = self._models.get(key)
        except TypeError:  # a list or a mapping among the values: not shared
            return self._rebuilt(model, fields_set, values)
        if found is None:
            found = self._models[key] = self._rebuilt(model, fields_set, values)
        return found

    def _rebuilt(self, model: SpecModel, fields_set: frozenset[str], values: dict[str, object]) -> SpecModel:
        names = self._fields_sets.get(fields_set)
        if names is None:
            names = self._fields_sets[fields_set] = set(fields_set)
        return type(model).model_construct(names, **values)

    def _value(self, value: object) -> object:
        if isinstance(value, SpecModel):
            return self.model(value)
        if isinstance(value, list) and any(isinstance(item, SpecModel) for item in value):
            return [self._value(item) for item in value]
        if isinstance(value, dict) and any(isinstance(item, SpecModel) for item in value.values()):
            return {name: self._value(item) for name, item in value.items()}
        return value


def _typed(value: object) -> object:
    """A value as a key part that equal values of other types do not match (1, 1.0 and True are
    equal in Python), nor 0.0 its -0.0 (which dumps otherwise). A model is already shared
    (`_Sharing.model`): equal ones with the same fields set and types are one object, so it is
    its identity (alive while the sharing runs: the models kept hold it)."""
    if isinstance(value, SpecModel):
        return id(value)
    if isinstance(value, float):
        return float, value.hex()
    if isinstance(value, tuple):
        return type(value), tuple(_typed(item) for item in value)
    if isinstance(value, frozenset):
        return frozenset, frozenset(_typed(item) for item in value)
    return type(value), value
