"""Adapters shipped with the bridge, at upstream's paths.

- ``snakepit_bridge.adapters.showcase.ShowcaseAdapter`` (also
  ``...showcase.showcase_adapter.ShowcaseAdapter``): the default adapter.
- ``snakepit_bridge.adapters.threaded_showcase.ThreadedShowcaseAdapter``:
  the thread profile's patterns.
- ``snakepit_bridge.adapters.template.TemplateAdapter``: a starting point.
"""

from .template import TemplateAdapter

__all__ = ["TemplateAdapter"]
