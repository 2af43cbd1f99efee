"""FAKE aiopslab package for the aiopslab-kind tests (see ../README.md).

Like the real package, importing it reads aiopslab/config.yml."""

from aiopslab.config import config  # noqa: F401  (read at import, as the real one)
