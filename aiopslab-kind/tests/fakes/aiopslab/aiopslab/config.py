"""FAKE aiopslab.config: `Config(path)` reads a YAML config file, as the real
one does (the real uses PyYAML; this fake reads the flat `key: value` subset
it needs, with YAML's scalars: true/false, null, numbers, quoted strings)."""


def _scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("", "null", "~"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Config:
    def __init__(self, config_path):
        self.config_path = config_path
        self.config = self._load_config()

    def _load_config(self):
        values = {}
        with open(self.config_path, encoding="utf-8") as f:  # FileNotFoundError, like the real one
            for line in f:
                line = line.split(" #", 1)[0].rstrip()
                if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                values[key.strip()] = _scalar(value)
        return values

    def get(self, key, default=None):
        return self.config.get(key, default)
