"""Checks OCSF events (JSON lines) against the OCSF 1.7.0 schema: the schema's models
and its compiled definition, both from PyPI `pydantic-ocsf` (a third-party
implementation of the schema).

    python validate.py EVENTS.jsonl

Each line must be one event that:
- its class's model accepts (required attributes, enumerations and the captions the
  model checks against them, `type_uid`);
- uses no attribute its object, or a profile it declares in `metadata.profiles`, does
  not define (the models allow any; `unmapped` is free by definition);
- meets every `at_least_one` / `just_one` constraint of its class and its objects;
- has JSON types as the schema's (the models coerce "10" into 10) and ports, addresses
  and captions (`class_name`, `category_name`, `type_name`, `status`) that are right;
- declares `metadata.version` 1.7.0; an HTTP Activity's activity is its method.

Prints one line per event: `ok <class_uid> <activity_id>`, or its line number and
errors; the last line is `events <n>`. Exits 1 if any event fails.
"""

import copy
import enum
import ipaddress
import json
import os
import re
import sys
import typing

import ocsf
from pydantic import BaseModel
from ocsf.v1_7_0 import events as E
from ocsf.v1_7_0 import objects as O

VERSION = "1.7.0"
SCHEMA = json.load(
    open(os.path.join(os.path.dirname(ocsf.__file__), "schemas", "v1_7_0.json"), encoding="utf-8")
)

# Only the classes intraport writes: a class uid outside these is an error too.
CLASSES = {
    2004: E.DetectionFinding,
    3002: E.Authentication,
    4001: E.NetworkActivity,
    4002: E.HttpActivity,
    6002: E.ApplicationLifecycle,
}

# Profile attributes (the models leave profiles out). OCSF's `host` profile adds
# `device` and `actor` to any class.
PROFILES = {"host": {"actor": O.Actor, "device": O.Device}}


def chain(table, name):
    """A schema class or object and those it extends, nearest first."""
    while name in table:
        yield table[name]
        name = table[name].get("extends")


def class_facts():
    """Per class uid: its schema name, caption, category uid and caption."""
    cats = SCHEMA["categories_meta"]["attributes"]
    facts = {}
    for name, ev in SCHEMA["events"].items():
        cat = next((c["category"] for c in chain(SCHEMA["events"], name) if c.get("category")), None)
        if "uid" in ev and cat in cats:
            uid = cats[cat]["uid"] * 1000 + ev["uid"]
            facts[uid] = (name, ev["caption"], cats[cat]["uid"], cats[cat]["caption"])
    return facts


CLASS_FACTS = class_facts()


def captions(name, attribute):
    """The captions of a class's enumeration, its own first, else the dictionary's."""
    for c in chain(SCHEMA["events"], name):
        e = c.get("attributes", {}).get(attribute, {})
        if isinstance(e, dict) and "enum" in e:
            return {int(k): v["caption"] for k, v in e["enum"].items()}
    return {int(k): v["caption"] for k, v in SCHEMA["dictionary"]["attributes"][attribute]["enum"].items()}


def constraints(table, name):
    """A class's or object's constraints: the nearest definition of each kind (an
    object's own `at_least_one` replaces the one of the object it extends)."""
    found = {}
    for c in chain(table, name):
        for kind, names in c.get("constraints", {}).items():
            found.setdefault(kind, names)
    return list(found.items())


def snake(model):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


def models(annotation):
    """The pydantic models an annotation can hold (through Optional, list, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += models(arg)
    return found


def scalars(annotation):
    """The plain types (int, str, float, bool) an annotation can hold; an enumeration
    holds its values' type."""
    if annotation in (int, str, float, bool):
        return {annotation}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {type(m.value) for m in annotation}
    found = set()
    for arg in typing.get_args(annotation):
        found |= scalars(arg)
    return found


def field(model, key):
    for name, f in model.model_fields.items():
        if key in (name, f.alias):
            return f
    return None


def check_constraints(table, name, value, path, errors):
    for kind, names in constraints(table, name):
        present = [n for n in names if value.get(n) not in (None, {}, [])]
        if kind == "at_least_one" and not present:
            errors.append(f"{path or 'event'}: needs at least one of {names}")
        if kind == "just_one" and len(present) != 1:
            errors.append(f"{path or 'event'}: needs exactly one of {names}, has {present}")


def walk(model, value, path, errors, extra=None):
    if not isinstance(value, dict):
        errors.append(f"{path}: an object expected, found {value!r}")
        return
    if path:
        check_constraints(SCHEMA["objects"], snake(model), value, path, errors)
    for key, v in value.items():
        here = f"{path}.{key}" if path else key
        f = field(model, key)
        if f is None and extra and key in extra:
            inner, plain = [extra[key]], set()
        elif f is None:
            errors.append(f"{here}: not an attribute of {model.__name__}")
            continue
        else:
            inner, plain = models(f.annotation), scalars(f.annotation)
        # Free by definition; typed wrongly by the model (checked in `check`).
        if key == "unmapped" or here == "http_request.http_method":
            continue
        if key == "ip":
            try:
                ipaddress.ip_address(v)
            except (TypeError, ValueError):
                errors.append(f"{here}: not an IP address: {v!r}")
        if key == "port" and not (isinstance(v, int) and 0 <= v <= 65535):
            errors.append(f"{here}: not a port: {v!r}")
        for item in v if isinstance(v, list) else [v]:
            if inner:
                walk(inner[0], item, here, errors)
            elif plain == {int} and (not isinstance(item, int) or isinstance(item, bool)):
                errors.append(f"{here}: an integer expected, found {item!r}")
            elif plain == {str} and not isinstance(item, str):
                errors.append(f"{here}: a string expected, found {item!r}")
            elif plain == {bool} and not isinstance(item, bool):
                errors.append(f"{here}: a boolean expected, found {item!r}")


def check(event):
    errors = []
    uid = event.get("class_uid")
    cls = CLASSES.get(uid)
    if cls is None:
        return [f"class_uid {uid!r}: not a class intraport writes"]
    name, caption, category, category_caption = CLASS_FACTS[uid]
    activities = captions(name, "activity_id")
    activity = event.get("activity_id")
    expected = {
        "class_name": caption,
        "category_uid": category,
        "category_name": category_caption,
        "type_name": f"{caption}: {event.get('activity_name') if activity == 99 else activities.get(activity)}",
    }
    for k, want in expected.items():
        if k in event and event[k] != want:
            errors.append(f"{k}: {event[k]!r}, the schema's is {want!r}")
    if event.get("metadata", {}).get("version") != VERSION:
        errors.append(f"metadata.version: {event.get('metadata', {}).get('version')!r}, not {VERSION}")

    model_input = copy.deepcopy(event)
    # pydantic-ocsf 3.0.0 gives every class the Findings' `status_id` enumeration (and
    # types `http_request.http_method` as an integer, where the schema has a string):
    # both are checked here against the schema, and the model checks the rest.
    status = {k: model_input.pop(k) for k in ("status_id", "status") if k in model_input}
    statuses = captions(name, "status_id")
    if "status_id" in status and status["status_id"] not in statuses:
        errors.append(f"status_id: {status['status_id']!r} is not in {statuses}")
    elif "status" in status and statuses.get(status.get("status_id")) != status["status"]:
        errors.append(f"status: {status['status']!r} is not status_id {status.get('status_id')!r}'s caption")
    method = model_input.get("http_request", {}).pop("http_method", None)
    if method is not None and (not isinstance(method, str) or not method):
        errors.append(f"http_request.http_method: a method name expected, found {method!r}")
    if uid == 4002 and isinstance(method, str):
        by_method = {c.upper(): i for i, c in activities.items() if i not in (0, 99)}
        if by_method.get(method, 99) != activity:
            errors.append(f"activity_id {activity!r} is not the method {method!r}'s")
    try:
        cls.model_validate(model_input)
    except Exception as e:  # pydantic's ValidationError, with every problem listed
        errors.append(str(e))

    check_constraints(SCHEMA["events"], name, event, "", errors)
    extra = {}
    for p in event.get("metadata", {}).get("profiles", []):
        if p not in PROFILES:
            errors.append(f"metadata.profiles: unknown profile {p!r}")
        extra.update(PROFILES.get(p, {}))
    walk(cls, event, "", errors, extra)
    return errors


def main():
    failed = events = 0
    with open(sys.argv[1], encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            events += 1
            try:
                event = json.loads(line)
            except ValueError as e:
                print(f"line {n}: not JSON: {e}")
                failed += 1
                continue
            errors = check(event)
            if errors:
                failed += 1
                said = "; ".join(" | ".join(e.splitlines()) for e in errors)
                print(f"line {n}: {event.get('class_uid')} {event.get('activity_id')}: {said}")
            else:
                print(f"ok {event['class_uid']} {event['activity_id']}")
    print(f"events {events}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
