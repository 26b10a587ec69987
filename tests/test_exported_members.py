"""The public SDK surface is exactly ``satchel.__all__`` (after httpx's test of the same name).

Changing it is an API change: update the pinned list here in the same commit, on purpose.
"""

from __future__ import annotations

import types

import satchel

PINNED = ["Api", "Artifact", "Client", "Image", "Run", "SatchelError", "__version__", "finish",
          "init", "log", "login"]


def test_all_is_pinned() -> None:
    assert satchel.__all__ == PINNED


def test_all_is_sorted_and_unique() -> None:
    assert satchel.__all__ == sorted(set(satchel.__all__))


def test_every_exported_name_exists() -> None:
    for name in satchel.__all__:
        assert hasattr(satchel, name), name
    assert isinstance(satchel.__version__, str) and satchel.__version__


def test_every_public_member_is_exported() -> None:
    """A name added to satchel/__init__.py but not to __all__ is an accident."""
    public = {
        name for name, value in vars(satchel).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # subpackages, imported as a side effect
        and name != "annotations"  # from __future__ import annotations
    }
    assert public == set(satchel.__all__) - {"__version__"}


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from satchel import *", namespace)  # noqa: S102
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PINNED)
