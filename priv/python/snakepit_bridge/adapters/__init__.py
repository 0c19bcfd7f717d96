"""Adapters shipped with Snakepit native."""
