"""The HTTP API against its own OpenAPI schema, fuzzed with schemathesis (in-process, ASGI).

Every operation is called with generated valid and invalid input, once with a key of each
role and once with no key. Whatever the input, the server must not answer 5xx, and every
answer must be one the schema documents: its status code, content type, headers and body.
A problem fails the test with schemathesis's report (the request as curl, the answer).
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, CheckFunction, load_all_checks
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup
from schemathesis.python import asgi

import iddetective
from iddetective.catalogue import Catalogue
from iddetective.web import create_app
from iddetective.web.app import ServerSettings

from support.facesets import WebCatalogue, copy_data

pytestmark = pytest.mark.faces

#: Who calls: a key of each role, and nobody.
CALLERS = ["admin", "search", "ingest", "no key"]

#: Cases per operation and caller, valid and invalid mixed; derandomized, so every run
#: sends the same requests (operations x 4 callers x 25: about 1,600 requests, ~30 s).
SETTINGS = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
    report_multiple_bugs=True,
)

#: Stands for a real photo in fixed inputs: the photo itself is put in after generation, since
#: Hypothesis describes strategies with their arguments (too long with a photo in them).
PHOTO = b"<photo>"

#: What every answer must satisfy (schemathesis's built-in checks, by name).
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",  # invalid input is refused with a 4xx
)


@dataclass(frozen=True)
class Served:
    """The app under test, and inputs that exist in its catalogue (random ones rarely do)."""

    app: FastAPI
    #: Operation label -> `as_strategy` arguments fixing some of its input to known values.
    known: dict[str, list[dict[str, Any]]]
    #: A real photo, sent where a known input says `PHOTO`.
    photo: bytes


@pytest.fixture(scope="module")
def served(
    web_catalogue: WebCatalogue, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One app over a private copy of the web catalogue, analysing photos in the request thread."""
    data = copy_data(web_catalogue.data_dir, tmp_path_factory.mktemp("api-schema") / "data")
    with Catalogue(data) as catalogue:
        person, faces = catalogue.person(web_catalogue.probes[0].person)
        erased = next(row.person for row in web_catalogue.enrolled if row.person != person.name)
        _, spare_key = catalogue.create_key("search", "revoked by the schema test")
    known: dict[str, list[dict[str, Any]]] = {
        "POST /api/search": [{"body": {"photo": PHOTO}}],
        "POST /api/photos": [{"body": {"photo": PHOTO}}, {"body": {"photo": PHOTO, "person": "x"}}],
        "POST /api/query": [
            {"body": {"q": f"{person.name} face:upload", "photo": PHOTO}},
            {"body": {"q": f"has:face OR {person.name[:3]}"}},
        ],
        "GET /api/find": [{"query": {"q": person.name[:3]}}],
        "GET /api/people/{person_id}": [
            {"path_parameters": {"person_id": ref}} for ref in (person.id, person.name)
        ],
        "DELETE /api/people/{person_id}": [{"path_parameters": {"person_id": erased}}],
        "GET /api/photos/{sha256}/thumbnail": [
            {"path_parameters": {"sha256": faces[0].photo.sha256}}
        ],
        "GET /api/faces/{face_id}/crop": [{"path_parameters": {"face_id": faces[0].id}}],
        "DELETE /api/keys/{key_id}": [{"path_parameters": {"key_id": spare_key.id}}],
    }
    photo = Path(web_catalogue.probes[0].path).read_bytes()
    yield Served(create_app(ServerSettings(data, analysis_workers=0, broker=None)), known, photo)
    asgi.shutdown_lifespans()  # schemathesis started the app on first use: stop it now


@pytest.fixture(scope="module")
def api_schema(served: Served) -> schemathesis.BaseSchema:
    """The app's own OpenAPI schema, its operations called in-process."""
    _import_every_module()
    return schemathesis.openapi.from_asgi("/openapi.json", served.app)


def _import_every_module() -> None:
    """Import all of iddetective. Schemathesis also tries literals from the app's loaded
    modules; with every one loaded, the same requests are sent whatever else this run imported."""
    for module in pkgutil.walk_packages(iddetective.__path__, "iddetective."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


@pytest.mark.slow
@pytest.mark.parametrize("caller", CALLERS)
def test_api_answers_as_its_schema_says(
    api_schema: schemathesis.BaseSchema, served: Served, web_catalogue: WebCatalogue, caller: str
) -> None:
    key = web_catalogue.keys.get(caller)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    problems = []
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the schema itself is broken
        operation = result.ok()
        problem = _fuzz(operation, headers, served)
        if problem:
            problems.append(f"--- {operation.label} with {caller}:\n{problem}")
    assert not problems, "\n\n".join(problems)


#: Integers past SQLite's 64 bits, which once made these answer 500 (SQLite's OverflowError).
HUGE = 2**63
HUGE_INPUTS = [
    ("GET /api/people", {"query": {"offset": HUGE}}),
    (
        "GET /api/people/{person_id}",
        {"path_parameters": {"person_id": "x"}, "query": {"offset": HUGE}},
    ),
    ("GET /api/faces/{face_id}/crop", {"path_parameters": {"face_id": HUGE}}),
    ("GET /api/faces/{face_id}/crop", {"path_parameters": {"face_id": -HUGE - 1}}),
    ("GET /api/audit", {"query": {"before": HUGE}}),
]


@pytest.mark.parametrize(("label", "inputs"), HUGE_INPUTS, ids=[i[0] for i in HUGE_INPUTS])
def test_huge_integers_are_refused_not_a_server_error(
    api_schema: schemathesis.BaseSchema,
    web_catalogue: WebCatalogue,
    label: str,
    inputs: dict[str, Any],
) -> None:
    method, path = label.split(" ")
    case = api_schema[path][method].Case(**inputs)
    headers = {"Authorization": f"Bearer {web_catalogue.keys['admin']}"}
    response = case.call(headers=headers)
    assert response.status_code == 422, response.text
    case.validate_response(response, checks=_checks())


#: Queries that still make POST /api/query fail with 500 (the fault is in the query language
#: and its SQL, not in web/): each one must be answered with 4xx (or 2xx) instead.
BAD_QUERIES = [
    pytest.param("xÆ", id="folds to a 2- and a 3-letter form: FTS5 MATCH inside an OR"),
    pytest.param("NOT " * 40 + "a", id="40 NOTs: SQLite parser stack overflow"),
    pytest.param("a " * 993, id="993 ANDed terms: SQLite expression tree too deep"),
]


@pytest.mark.parametrize("q", BAD_QUERIES)
def test_queries_that_used_to_fail_are_answered(
    api_schema: schemathesis.BaseSchema, web_catalogue: WebCatalogue, q: str
) -> None:
    case = api_schema["/api/query"]["POST"].Case(body={"q": q}, media_type="multipart/form-data")
    headers = {"Authorization": f"Bearer {web_catalogue.keys['search']}"}
    case.call_and_validate(headers=headers, checks=_checks())


def _checks() -> list[CheckFunction]:
    """The checks CHECK_NAMES names: schemathesis's built-in check functions."""
    checks: list[CheckFunction] = []
    for name in CHECK_NAMES:
        check = CHECKS.get_one(name)
        assert not isinstance(check, type), f"{name} is a check class, not a function"
        checks.append(check)
    return checks


def _fuzz(
    operation: schemathesis.APIOperation, headers: dict[str, str], served: Served
) -> str | None:
    """What went wrong calling `operation` with generated input (some of it known), or None."""
    load_all_checks()
    checks = _checks()
    known = served.known.get(operation.label, [])
    cases = st.one_of(
        [operation.as_strategy(mode, **fixed) for mode in GenerationMode for fixed in [{}, *known]]
    ).map(lambda case: _with_photo(case, served.photo))

    @SETTINGS
    @given(case=cases)
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    try:
        call()
    except (Exception, FailureGroup) as error:
        return _describe(error)
    return None


def _with_photo(case: schemathesis.Case, photo: bytes) -> schemathesis.Case:
    """`case` with the real photo where its body says `PHOTO`."""
    if isinstance(case.body, dict) and case.body.get("photo") == PHOTO:
        # a multipart body's file is bytes, which schemathesis's Body type leaves out
        case.body = {**case.body, "photo": photo}  # type: ignore[dict-item]
    return case


def _describe(error: BaseException) -> str:
    """A failure's report: schemathesis's own text, or the traceback of anything else."""
    if isinstance(error, FailureGroup):
        notes: list[Any] = getattr(error, "__notes__", [])
        return "\n".join([error.message, *map(str, notes)])
    if isinstance(error, BaseExceptionGroup):
        return "\n".join(_describe(inner) for inner in error.exceptions)
    # In-process, an exception the app did not handle reaches the caller (a client gets a 500).
    return "the server raised:\n" + "".join(traceback.format_exception(error, limit=-6))
