"""FAKE: reads aiopslab/config.yml at import, as the real package does."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent


class Config:
    def __init__(self, path):
        self.values = {}
        with open(path, encoding="utf-8") as f:  # FileNotFoundError, like the real one
            for line in f:
                line = line.split("#", 1)[0].strip()
                if ":" in line:
                    key, value = line.split(":", 1)
                    self.values[key.strip()] = value.strip()

    def get(self, key, default=None):
        return self.values.get(key, default)


config = Config(BASE_DIR / "config.yml")
