"""A stack's equal parts shared (specs.shared): the same stack, the same fields set in every
part, less held."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from specs.model import SpecModel, Stack
from specs.shared import shared

STACK = {
    "name": "demo",
    "networks": {"net": {"subnet": "10.88.0.0/24"}},
    "containers": {
        "a": {"command": "sleep 1", "networks": ["net"], "ports": ["8080:80"],
              "resources": {"memory": "64Mi", "pids": 100}},
        "b": {"command": "sleep 1", "networks": ["net"], "ports": ["8081:80"],
              "resources": {"memory": "64Mi", "pids": 100}},
        "c": {"command": "sleep 1", "networks": ["net"], "resources": {"memory": "128Mi", "pids": 100}},
        "d": {"command": "sleep 1", "networks": ["net"], "resources": {"memory": "64Mi", "pids": 100, "cpus": None}},
    },
}


def models(value: object, at: tuple[object, ...] = ()) -> Iterator[tuple[tuple[object, ...], BaseModel]]:
    """Every model in `value`, by where it is."""
    if isinstance(value, BaseModel):
        yield at, value
        for name, field in value:
            yield from models(field, (*at, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from models(item, (*at, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from models(item, (*at, key))


def test_a_shared_stack_is_equal_with_the_same_fields_set_in_every_part() -> None:
    stack = Stack.model_validate(STACK)
    again = shared(stack)
    assert again == stack
    before, after = dict(models(stack)), dict(models(again))
    assert before.keys() == after.keys()
    for at, model in before.items():
        assert after[at] == model and type(after[at]) is type(model), at
        assert after[at].model_fields_set == model.model_fields_set, at


def test_equal_parts_are_one_object_and_equal_fields_sets_one_set() -> None:
    stack = shared(Stack.model_validate(STACK))
    a, b, c, d = (stack.containers[name] for name in "abcd")
    assert a.resources is b.resources and a.networks["net"] is b.networks["net"] is c.networks["net"]
    assert a.resources is not c.resources  # another limit
    assert a.resources is not d.resources and a.resources == d.resources  # cpus set, to its default
    assert d.resources.model_fields_set == {"memory", "pids", "cpus"}
    assert a.model_fields_set is b.model_fields_set
    assert a.ports[0].model_fields_set is b.ports[0].model_fields_set and a.ports[0] != b.ports[0]
    sets = {id(model.model_fields_set): model.model_fields_set for _, model in models(stack)}
    assert len(sets) == len({frozenset(s) for s in sets.values()})


def test_a_copy_with_an_update_leaves_the_models_it_shares_with_unchanged() -> None:
    stack = shared(Stack.model_validate(STACK))
    a, b = stack.containers["a"], stack.containers["b"]
    changed = a.resources.model_copy(update={"cpus": 0.5})
    assert changed.model_fields_set == {"memory", "pids", "cpus"}
    assert a.resources.model_fields_set == b.resources.model_fields_set == {"memory", "pids"}
    assert a.model_copy(update={"hostname": "other"}).hostname == "other" and b.hostname == "b"


class Value(SpecModel):
    x: bool | int | float | None = None
    y: int | None = None
    z: tuple[bool | int, ...] = ()


class Holder(SpecModel):
    value: Value


class Values(SpecModel):
    items: list[Value] = []
    holders: list[Holder] = []


def test_values_equal_in_python_but_of_other_types_stay_apart_at_any_depth() -> None:
    values = shared(Values(items=[Value(x=1), Value(x=1.0), Value(x=True), Value(x=1)],
                           holders=[Holder(value=Value(x=1)), Holder(value=Value(x=1.0)), Holder(value=Value(x=True))]))
    assert [type(item.x) for item in values.items] == [int, float, bool, int]
    assert values.items[0] is values.items[3] and len({id(item) for item in values.items}) == 3
    assert [type(holder.value.x) for holder in values.holders] == [int, float, bool]
    signed = shared(Values(items=[Value(x=0.0), Value(x=-0.0), Value(z=(1,)), Value(z=(True,))]))
    assert [item.model_dump_json() for item in signed.items] == [
        '{"x":0.0,"y":null,"z":[]}', '{"x":-0.0,"y":null,"z":[]}', '{"x":null,"y":null,"z":[1]}',
        '{"x":null,"y":null,"z":[true]}']


def test_parts_equal_but_for_their_fields_set_stay_apart_at_any_depth() -> None:
    """A default written out is not a default left out, in a part of a part too."""
    holders = [Holder(value=Value(y=None)), Holder(value=Value()), Holder(value=Value(x=None))]
    values = shared(Values(holders=holders))
    assert [holder.value.model_fields_set for holder in values.holders] == [{"y"}, set(), {"x"}]
    assert [h.model_dump(exclude_unset=True) for h in values.holders] == [h.model_dump(exclude_unset=True)
                                                                          for h in holders]
