"""The default adapter: ``snakepit_bridge.adapters.showcase.ShowcaseAdapter``."""

from .showcase_adapter import ShowcaseAdapter
from .tool import StreamChunk

__all__ = ["ShowcaseAdapter", "StreamChunk"]
