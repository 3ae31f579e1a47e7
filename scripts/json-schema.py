#!/usr/bin/python3
"""Checks an envcryptctl --json document against its documented schema.

    json-schema.py DOC COMMAND < document

DOC is Documentation/admin-guide/json-output.rst.  Its "Every command's
document" table names, per command, the document's type; its record
sections ("Key record", ...) give a record's fields in a table of field,
type and meaning.  Types:

    string  integer  number  boolean  null  object (any members)
    [T]                 an array of T
    T | U               either
    map(T)              an object whose every member is a T
    {a: T, b?: U}       an object with exactly these members, in this
                        order; b may be absent
    key, header, ...    the record of that name (its section's table; a
                        type ending in "?" there marks a field that may be
                        absent)

Prints nothing and exits 0 when the document fits; otherwise one line per
mismatch, naming its JSON path, and exits 1.  Exit 2: a usage error, a
command the table does not list, or a table it cannot read.
"""

import json
import re
import sys

SCALARS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
}


class SchemaError(Exception):
    """The documentation's tables cannot be read."""


def simple_tables(text):
    """(title of the section, rows) of every RST simple table; a row is its
    cells, a line whose first column is blank continues the row above."""
    lines = text.splitlines()
    title = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and re.fullmatch(r"=+", lines[i + 1]) and line.strip() \
                and not re.fullmatch(r"[= ]+", line):
            title = line.strip()
        if re.fullmatch(r"=+( +=+)+", line):
            starts = [m.start() for m in re.finditer(r"=+", line)]
            rows, borders = [], 1
            i += 1
            while i < len(lines) and borders < 3:
                row = lines[i]
                if re.fullmatch(r"=+( +=+)+", row):
                    borders += 1
                elif borders == 2 and row.strip():
                    cells = [row[s:(starts[k + 1] if k + 1 < len(starts) else None)].strip()
                             for k, s in enumerate(starts)]
                    if cells[0] == "" and rows:
                        rows[-1] = [(a + " " + b).strip() for a, b in zip(rows[-1], cells)]
                    else:
                        rows.append(cells)
                i += 1
            yield title, rows
            continue
        i += 1


def unquote(cell):
    return cell.replace("``", "").strip()


def read_doc(path):
    with open(path, encoding="utf-8") as doc:
        text = doc.read()
    commands, records = {}, {}
    for title, rows in simple_tables(text):
        if title == "Every command's document":
            for cells in rows:
                commands[unquote(cells[0])] = unquote(cells[1])
        elif title.endswith(" record"):
            name = title[: -len(" record")].lower().replace(" ", "-")
            records[name] = [(unquote(c[0]), unquote(c[1])) for c in rows]
    if not commands:
        raise SchemaError(f"{path}: no \"Every command's document\" table")
    return commands, records


def parse_type(text, records):
    """A type as a tree: ("scalar", name), ("array", T), ("union", [T...]),
    ("map", T), ("object", [(name, optional, T)...])."""
    tokens = re.findall(r"[A-Za-z][\w-]*|\?|[{}\[\]():,|]", text)
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else None

    def take(expected=None):
        nonlocal position
        token = peek()
        if token is None or (expected is not None and token != expected):
            raise SchemaError(f"type '{text}': expected {expected or 'more'} at token {position}")
        position += 1
        return token

    def one():
        token = take()
        if token == "[":
            element = union()
            take("]")
            return ("array", element)
        if token == "{":
            fields = []
            while peek() != "}":
                name = take()
                optional = peek() == "?"
                if optional:
                    take("?")
                take(":")
                fields.append((name, optional, union()))
                if peek() == ",":
                    take(",")
            take("}")
            return ("object", fields)
        if token == "map":
            take("(")
            element = union()
            take(")")
            return ("map", element)
        if token in SCALARS:
            return ("scalar", token)
        if token in records:
            return record_type(token, records)
        raise SchemaError(f"type '{text}': unknown type {token}")

    def union():
        alternatives = [one()]
        while peek() == "|":
            take("|")
            alternatives.append(one())
        return alternatives[0] if len(alternatives) == 1 else ("union", alternatives)

    tree = union()
    if peek() is not None:
        raise SchemaError(f"type '{text}': unexpected {peek()}")
    return tree


def record_type(name, records):
    fields = []
    for field, type_text in records[name]:
        optional = type_text.endswith("?")
        fields.append((field, optional, parse_type(type_text.rstrip("?").strip(), records)))
    return ("object", fields)


def check(value, tree, path, problems):
    kind = tree[0]
    if kind == "scalar":
        if not SCALARS[tree[1]](value):
            problems.append(f"{path}: {json.dumps(value)[:60]} is not {tree[1]}")
    elif kind == "array":
        if not isinstance(value, list):
            problems.append(f"{path}: not an array")
            return
        for index, element in enumerate(value):
            check(element, tree[1], f"{path}[{index}]", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: not an object")
            return
        for name, element in value.items():
            check(element, tree[1], f"{path}.{name}", problems)
    elif kind == "union":
        for alternative in tree[1]:
            attempt = []
            check(value, alternative, path, attempt)
            if not attempt:
                return
        problems.append(f"{path}: {json.dumps(value)[:60]} fits none of its types")
    elif kind == "object":
        if not isinstance(value, dict):
            problems.append(f"{path}: not an object")
            return
        expected = [name for name, optional, _ in tree[1] if not optional or name in value]
        if list(value) != expected:
            problems.append(f"{path}: members {list(value)}, documented {expected}")
        for name, _, element in tree[1]:
            if name in value:
                check(value[name], element, f"{path}.{name}", problems)


def main():
    if len(sys.argv) != 3:
        print("usage: json-schema.py DOC COMMAND < document", file=sys.stderr)
        return 2
    try:
        commands, records = read_doc(sys.argv[1])
        if sys.argv[2] not in commands:
            print(f"{sys.argv[2]}: not in the documented commands", file=sys.stderr)
            return 2
        tree = parse_type(commands[sys.argv[2]], records)
    except (OSError, SchemaError) as error:
        print(error, file=sys.stderr)
        return 2
    try:
        document = json.load(sys.stdin)
    except json.JSONDecodeError as error:
        print(f"$: not one JSON document ({error})")
        return 1
    problems = []
    check(document, tree, "$", problems)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
