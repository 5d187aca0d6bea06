import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collection_modifyitems(config, items):
    """Slow tests first: with `-n 2` (the README's command) a long test left
    for the end keeps one core busy while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
