"""Satchel: experiment tracking and artifacts whose files stay in your own bucket.

The public SDK surface is listed in ``__all__`` (a test pins it).
"""

from __future__ import annotations

__version__ = "0.1.0"

from satchel.errors import SatchelError
from satchel.sdk.artifact import Api, Artifact
from satchel.sdk.client import Client, login
from satchel.sdk.media import Image
from satchel.sdk.run import Run, finish, init, log

__all__ = ["Api", "Artifact", "Client", "Image", "Run", "SatchelError", "__version__", "finish",
           "init", "log", "login"]
