"""Checks OCSF events (JSON lines) against the OCSF 1.7.0 schema, with the schema's
models from PyPI `pydantic-ocsf` (a third-party implementation of the schema).

    python validate.py EVENTS.jsonl

Each line must be one event that its class's model accepts: required attributes,
types, enumerations and their captions (`activity_name`, `severity`, ...), `type_uid`.
The models allow attributes the schema does not define, so this also walks every
object and refuses an attribute that its object (or a profile the event declares in
`metadata.profiles`) does not define; `unmapped` is free by definition. Addresses
must parse. Prints one line per event: `ok <class_uid> <activity_id>`, or its line
number and errors; exits 1 if any event fails.
"""

import ipaddress
import json
import sys
import typing

from pydantic import BaseModel
from ocsf.v1_7_0 import events as E
from ocsf.v1_7_0 import objects as O

# Only the classes intraport writes: a class uid outside these is an error too.
CLASSES = {
    2004: E.DetectionFinding,
    3002: E.Authentication,
    4001: E.NetworkActivity,
    4002: E.HttpActivity,
    6002: E.ApplicationLifecycle,
}

# Profile attributes (the models leave profiles out). OCSF's `host` profile adds
# `device` and `actor` to any class that applies it.
PROFILES = {"host": {"actor": O.Actor, "device": O.Device}}


def models(annotation):
    """The pydantic models an annotation can hold (through Optional, list, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += models(arg)
    return found


def field(model, key):
    for name, f in model.model_fields.items():
        if key in (name, f.alias):
            return f
    return None


def walk(model, value, path, errors, extra=None):
    if not isinstance(value, dict):
        errors.append(f"{path}: an object expected, found {value!r}")
        return
    for key, v in value.items():
        here = f"{path}.{key}" if path else key
        f = field(model, key)
        if f is None and extra and key in extra:
            inner = [extra[key]]
        elif f is None:
            errors.append(f"{here}: not an attribute of {model.__name__}")
            continue
        else:
            inner = models(f.annotation)
        if key == "unmapped":
            continue
        if key == "ip":
            try:
                ipaddress.ip_address(v)
            except ValueError:
                errors.append(f"{here}: not an IP address: {v!r}")
        if not inner:
            continue
        for item in v if isinstance(v, list) else [v]:
            walk(inner[0], item, here, errors)


def check(event):
    errors = []
    cls = CLASSES.get(event.get("class_uid"))
    if cls is None:
        return [f"class_uid {event.get('class_uid')!r}: not a class intraport writes"]
    # pydantic-ocsf 3.0.0 types `http_request.http_method` as an integer, while the
    # schema has it a string (`string_t`, with the method names as its enumeration):
    # the model is checked without it, and the method here.
    model_input = json.loads(json.dumps(event))
    method = model_input.get("http_request", {}).pop("http_method", None)
    if method is not None and (not isinstance(method, str) or not method):
        errors.append(f"http_request.http_method: a method name expected, found {method!r}")
    try:
        cls.model_validate(model_input)
    except Exception as e:  # pydantic's ValidationError, with every problem listed
        errors.append(str(e))
    declared = event.get("metadata", {}).get("profiles", [])
    extra = {}
    for p in declared:
        if p not in PROFILES:
            errors.append(f"metadata.profiles: unknown profile {p!r}")
        extra.update(PROFILES.get(p, {}))
    walk(cls, event, "", errors, extra)
    return errors


def main():
    failed = 0
    with open(sys.argv[1], encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
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
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
