"""Every typed error survives a pickle round trip (worker processes send them to the server),
and messages quoting user-supplied text show its control characters escaped."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import types
import typing
from pathlib import Path
from typing import Any

import pytest

import iddetective
from iddetective.errors import BadImage, IDDetectiveError, printable


def all_modules() -> list[str]:
    """Every module of the package (imported, so every error class is defined)."""
    names = [
        info.name
        for info in pkgutil.walk_packages(iddetective.__path__, prefix="iddetective.")
        if info.name != "iddetective.__main__"
    ]
    for name in names:
        importlib.import_module(name)
    return names


def every_error_class() -> list[type[IDDetectiveError]]:
    """IDDetectiveError and every subclass defined in the package, found, not listed."""
    all_modules()
    found: list[type[IDDetectiveError]] = []
    pending: list[type[IDDetectiveError]] = [IDDetectiveError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("iddetective") and cls not in found:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


#: A sample value for each parameter type the errors' constructors take.
SAMPLES: dict[object, object] = {
    str: "photo 1.jpg",
    int: 1,
    float: 1.5,
    Path: Path("/data/photo 1.jpg"),
    list[tuple[str, str]]: [("p1", "Ann"), ("p2", "Ann")],
}


def sample(annotation: object) -> object:
    """A value of `annotation`'s type; optional types get their non-None type's sample."""
    if annotation in SAMPLES:
        return SAMPLES[annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        real = [a for a in typing.get_args(annotation) if a is not type(None)]
        return sample(real[0])
    raise AssertionError(f"add a sample value for constructor parameters of type {annotation}")


def construct(cls: type[IDDetectiveError]) -> IDDetectiveError:
    """An instance made through the class's own constructor with sample arguments."""
    init: Any = cls.__init__
    if init is BaseException.__init__ or init is Exception.__init__:
        return cls("something went wrong with photo 1.jpg")
    hints = typing.get_type_hints(init, vars(inspect.getmodule(cls)))
    arguments = {
        name: sample(hints[name])
        for name, parameter in inspect.signature(init).parameters.items()
        if name != "self" and parameter.default is inspect.Parameter.empty
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    return cls(**arguments)


ERRORS = every_error_class()


def test_the_discovery_finds_errors_of_every_kind() -> None:
    names = {cls.__name__ for cls in ERRORS}
    assert {"BadImage", "AmbiguousPerson", "QueryError", "FetchError", "Busy"} <= names
    assert {"HostsFileError", "RemoteHostError", "LastAdminKey", "UploadTooLarge"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__qualname__)
def test_every_error_survives_a_pickle_round_trip(cls: type[IDDetectiveError]) -> None:
    error = construct(cls)
    error.add_note("raised while analysing an upload")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)  # every attribute kept (path, reason, line, ...)
    assert copy.exit_code == error.exit_code


def test_bad_image_keeps_its_path_and_reason_across_processes() -> None:
    copy = pickle.loads(pickle.dumps(BadImage("x.jpg", "not an image")))
    assert (copy.path, copy.reason, str(copy)) == ("x.jpg", "not an image", "x.jpg: not an image")


def test_printable_escapes_control_characters_and_keeps_the_rest() -> None:
    assert printable("http://h/a\r\nSet-Cookie: x") == "http://h/a\\r\\nSet-Cookie: x"
    assert printable("a\x00b\x1b[31mc\x7f\u2028d\u202e") == "a\\x00b\\x1b[31mc\\x7f\\u2028d\\u202e"
    assert printable("Пётр José\\n «ok» 😀") == "Пётр José\\n «ok» 😀"
    assert printable(printable("a\nb")) == "a\\nb"


def test_messages_quoting_a_path_or_url_escape_its_control_characters() -> None:
    from iddetective.sources.fetch import FetchError

    image = BadImage("evil\r\nerror: forged.jpg", "not an image")
    assert "\n" not in str(image) and "evil\\r\\nerror: forged.jpg" in str(image)
    assert image.path == "evil\r\nerror: forged.jpg"  # the attribute keeps the real name
    fetched = FetchError("http://h/x\r\nline 9: forged", "HTTP 404")
    assert str(fetched) == "http://h/x\\r\\nline 9: forged: HTTP 404"


def test_an_import_report_shows_control_characters_of_its_rows_escaped(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from iddetective.cli import main

    rows = [
        {
            "id": "p1",
            "name": "Ann",
            "relations": [{"kind": "friend", "to": "x\r\nimport.jsonl:7: forged"}],
            "photos": ["http://127.0.0.1:9/a.jpg\r\nimport.jsonl:8: forged"],
        }
    ]
    source = tmp_path / "import.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(main, ["import", str(source), "--data", str(tmp_path / "d")])
    assert result.exit_code == 3, result.output
    problems = [line for line in result.output.splitlines() if "import.jsonl:" in line]
    assert len(problems) == 2, result.output  # one line per problem, none forged
    assert all(line.lstrip().startswith(f"{source}:1: ") for line in problems), problems
    assert "x\\r\\nimport.jsonl:7: forged" in result.output
    assert "a.jpg\\r\\nimport.jsonl:8: forged" in result.output
