"""Datasets on disk: descriptors, listing, and a content hash that notices every change."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from proctor import datasets, exceptions
from proctor.config import Settings


def make_dataset(settings: Settings, name: str = "d") -> Path:
    assert settings.datasets_dir is not None
    folder = settings.datasets_dir / name
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text("1,2\n")
    (folder / "sub" / "b.bin").write_bytes(b"\x00\x01")
    return folder


def test_datasets_list_all_empty_when_folder_missing(settings: Settings) -> None:
    assert datasets.list_all(settings) == []


def test_datasets_list_all_skips_files_and_bad_names(settings: Settings) -> None:
    make_dataset(settings, "good")
    assert settings.datasets_dir is not None
    (settings.datasets_dir / "loose-file").write_text("x")
    (settings.datasets_dir / ".hidden").mkdir()

    assert [d.name for d in datasets.list_all(settings)] == ["good"]


def test_datasets_counts_files_and_bytes_without_the_descriptor(settings: Settings) -> None:
    folder = make_dataset(settings)
    (folder / "dataset.toml").write_text('description = " spaced "\ndirection = "lower"\n')

    found = datasets.get(settings, "d")

    assert (found.files, found.size_bytes) == (2, 6)
    assert found.description == "spaced"
    assert found.direction is datasets.Direction.LOWER


@pytest.mark.parametrize(
    ("descriptor", "fragment"),
    [
        ("description = [", "cannot be read"),
        ("description = 3", "description must be a string"),
        ('direction = "up"', "'higher' or 'lower'"),
    ],
)
def test_datasets_bad_descriptor_names_the_problem(
    settings: Settings, descriptor: str, fragment: str
) -> None:
    (make_dataset(settings) / "dataset.toml").write_text(descriptor)

    with pytest.raises(exceptions.DatasetMisconfigured, match=fragment):
        datasets.get(settings, "d")
    assert datasets.list_all(settings) == []


@pytest.mark.parametrize("name", ["missing", "..", "a/b", "-x", ""])
def test_datasets_get_unknown_name(settings: Settings, name: str) -> None:
    make_dataset(settings)

    with pytest.raises(exceptions.UnknownDataset):
        datasets.get(settings, name)


Change = Callable[[Path], None]
CHANGES: dict[str, Change] = {
    "content": lambda f: (f / "a.csv").write_text("1,3\n"),
    "same size, new bytes": lambda f: (f / "sub" / "b.bin").write_bytes(b"\x00\x02"),
    "rename": lambda f: (f / "a.csv").rename(f / "c.csv"),
    "new file": lambda f: (f / "new").write_text(""),
    "new empty folder": lambda f: (f / "empty").mkdir(),
    "new link": lambda f: (f / "link").symlink_to("a.csv"),
    "descriptor": lambda f: (f / "dataset.toml").write_text('description = "x"\n'),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_datasets_content_hash_changes_with_any_change(settings: Settings, change: Change) -> None:
    folder = make_dataset(settings)
    before = datasets.content_hash(folder)

    change(folder)

    assert datasets.content_hash(folder) != before


def test_datasets_content_hash_is_stable_and_independent_of_location(settings: Settings) -> None:
    first = make_dataset(settings, "one")
    second = make_dataset(settings, "two")
    os.utime(second / "a.csv", (0, 0))

    assert datasets.content_hash(first) == datasets.content_hash(first)
    assert datasets.content_hash(first) == datasets.content_hash(second)
    assert datasets.content_hash(first).startswith("sha256:")


def test_datasets_content_hash_sees_a_rewrite_that_keeps_size_and_mtime(
    settings: Settings,
) -> None:
    folder = make_dataset(settings)
    old = 1_000_000_000
    os.utime(folder / "a.csv", ns=(old, old))
    before = datasets.content_hash(folder)

    (folder / "a.csv").write_text("9,9\n")
    os.utime(folder / "a.csv", ns=(old, old))

    assert datasets.content_hash(folder) != before


def test_datasets_content_hash_reads_settled_files_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_dataset(settings)
    # As if the files had settled long ago: their digests may be cached.
    monkeypatch.setattr(datasets, "RACY_WINDOW_NS", -(10**18))
    first = datasets.content_hash(folder)
    hits = datasets._cached_digest.cache_info().hits

    second = datasets.content_hash(folder)
    (folder / "a.csv").write_text("a longer line\n")

    assert second == first
    assert datasets._cached_digest.cache_info().hits == hits + 2
    assert datasets.content_hash(folder) != first


def test_datasets_content_hash_of_link_target_not_followed(settings: Settings) -> None:
    folder = make_dataset(settings)
    (folder / "link").symlink_to("a.csv")
    before = datasets.content_hash(folder)

    (folder / "link").unlink()
    (folder / "link").symlink_to("sub/b.bin")

    assert datasets.content_hash(folder) != before
