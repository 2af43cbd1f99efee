"""FAKE tiktoken (tests only; NOT OpenAI's tokenizer).

Stands in for tiktoken in the aiopslab-kind tests with the one behaviour that
matters to them: an encoding's data file must be in tiktoken's cache, or
tiktoken downloads it from the internet - which the fake refuses, as a host
without network would fail. The cache rule is the real one: the directory is
$TIKTOKEN_CACHE_DIR, else $DATA_GYM_CACHE_DIR, else
<tempdir>/data-gym-cache, and the file is named by the SHA-1 of the blob URL.
The file's content is not checked (the real one checks its hash).

Encoding.encode gives len(text) // 4 integers (a rough token count) and
refuses special tokens as the real default does; decode is lossy."""

import hashlib
import os
import tempfile

__version__ = "0.0.0-fake"

_BLOBS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "p50k_base": "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",
    "r50k_base": "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
}
_MODEL_PREFIXES = (
    ("gpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-davinci-003", "p50k_base"),
    ("davinci", "r50k_base"),
)
_SPECIAL_TOKENS = ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>")


def cache_path(blobpath):
    """Where the real tiktoken caches `blobpath` (None when caching is disabled)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())


class Encoding:
    def __init__(self, name):
        self.name = name

    def encode(self, text, *, allowed_special=frozenset(), disallowed_special="all"):
        if disallowed_special == "all":
            for token in _SPECIAL_TOKENS:
                if token in text and token not in allowed_special and allowed_special != "all":
                    raise ValueError(
                        f"Encountered text corresponding to disallowed special token {token!r}.\n"
                        "(FAKE tiktoken: pass disallowed_special=() to encode it as normal text.)"
                    )
        return [ord(text[i]) for i in range(0, len(text) - len(text) % 4, 4)]

    def encode_ordinary(self, text):
        return self.encode(text, disallowed_special=())

    def decode(self, tokens):
        return "".join(chr(t) * 4 for t in tokens)

    def __repr__(self):
        return f"<Encoding {self.name!r} (FAKE)>"


def get_encoding(encoding_name):
    if encoding_name not in _BLOBS:
        raise ValueError(f"Unknown encoding {encoding_name}.")
    blob = _BLOBS[encoding_name]
    path = cache_path(blob)
    if path is None or not os.path.isfile(path):
        raise ConnectionError(
            f"fake tiktoken: cannot download {blob}: no network (cache it in TIKTOKEN_CACHE_DIR)"
        )
    return Encoding(encoding_name)


def encoding_name_for_model(model_name):
    for prefix, name in _MODEL_PREFIXES:
        if model_name.startswith(prefix):
            return name
    raise KeyError(f"Could not automatically map {model_name} to a tokeniser.")


def encoding_for_model(model_name):
    return get_encoding(encoding_name_for_model(model_name))
