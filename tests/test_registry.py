"""The registry resolves a backend by short name, dotted path, class or instance, and refuses
what does not satisfy the seam's Protocol with an error naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.errors import UsageError
from iddetective.faces.pipeline import FacePipeline, HogDetector, PipelineSettings
from iddetective.registry import available, checked_instance, resolve_class
from iddetective.vector_index.exact import ExactIndex


@pytest.mark.parametrize("kind", ["detector", "embedder", "store", "vector_index"])
def test_every_builtin_satisfies_its_seam(kind: str) -> None:
    for name in available(kind):
        assert isinstance(resolve_class(kind, name), type)


@pytest.mark.parametrize(
    ("kind", "spec", "missing"),
    [
        ("vector_index", "builtins:dict", "no add, ids, range_search, remove, save, search"),
        ("detector", "iddetective.faces.pipeline:DlibResnetEmbedder", "no detect"),
        ("embedder", "iddetective.faces.pipeline:HogDetector", "no embed"),
        ("store", "iddetective.vector_index.exact:ExactIndex", "no add_key"),
    ],
)
def test_a_dotted_path_to_the_wrong_thing_is_refused(kind: str, spec: str, missing: str) -> None:
    with pytest.raises(UsageError, match=rf"does not implement the .* protocol: {missing}"):
        resolve_class(kind, spec)


def test_a_dotted_path_to_something_not_a_class_is_refused() -> None:
    with pytest.raises(UsageError, match="names '/', not a class"):
        resolve_class("vector_index", "os:sep")


def test_a_class_is_checked_as_a_name_would_be() -> None:
    assert resolve_class("vector_index", ExactIndex) is ExactIndex
    with pytest.raises(UsageError, match="VectorIndex protocol: no __len__"):
        resolve_class("vector_index", HogDetector)


def test_an_instance_is_checked_for_every_member() -> None:
    detector = HogDetector()
    assert checked_instance("detector", detector) is detector

    class Nameless:
        def detect(self, image: object, upsample: int) -> list[object]:
            return []

    with pytest.raises(UsageError, match="Detector protocol: no name"):
        checked_instance("detector", Nameless())
    with pytest.raises(UsageError, match="Detector protocol: no name"):
        FacePipeline(detector=Nameless())  # type: ignore[arg-type]


def test_a_pipeline_naming_an_embedder_as_detector_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="Detector protocol: no detect"):
        FacePipeline(PipelineSettings(detector="iddetective.faces.pipeline:DlibResnetEmbedder"))


def test_cli_refuses_a_vector_index_that_is_not_one(tmp_path: Path) -> None:
    Catalogue(tmp_path, create=True).close()
    result = CliRunner().invoke(
        main,
        ["reindex", "--data", str(tmp_path)],
        env={"IDDETECTIVE_VECTOR_INDEX": "builtins:dict"},
    )
    assert result.exit_code == 2, result.output
    assert "vector_index builtins:dict does not implement the VectorIndex protocol" in (
        result.output
    )
    assert "Traceback" not in result.output


class MemoryOnly(ExactIndex):
    """A VectorIndex kept neither in a file nor in the catalogue: the keeper cannot keep it
    (an ExactIndex whose class cannot load or tidy a file)."""

    # Deliberately not ExactIndex's methods (what this test is about), so not their types.
    load = None  # type: ignore[assignment]
    remove_abandoned = None  # type: ignore[assignment]


def test_an_index_the_keeper_cannot_keep_is_refused(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path, create=True, vector_index="test_registry:MemoryOnly")
    with catalogue, pytest.raises(UsageError, match=r"neither kept in a file .* nor in the"):
        catalogue.reindex()
