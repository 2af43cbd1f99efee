"""FAKE aiopslab.paths: the real module's directories; reads config.yml at import."""

import os
from pathlib import Path

from aiopslab.config import Config

HOME_DIR = Path(os.path.expanduser("~"))
BASE_DIR = Path(__file__).resolve().parent
BASE_PARENT_DIR = BASE_DIR.parent
config = Config(BASE_DIR / "config.yml")

# The real applications live in the `aiopslab-applications` submodule beside
# the package; the fake's tiny manifests live in `aiopslab-fake-apps`.
TARGET_MICROSERVICES = BASE_PARENT_DIR / "aiopslab-fake-apps"

DATA_DIR = BASE_DIR / str(config.get("data_dir") or "data")
RESULTS_DIR = DATA_DIR / "results"

SOCIAL_NETWORK_METADATA = BASE_DIR / "service" / "metadata" / "social-network.json"
HOTEL_RES_METADATA = BASE_DIR / "service" / "metadata" / "hotel-reservation.json"
PROMETHEUS_METADATA = BASE_DIR / "service" / "metadata" / "prometheus.json"
