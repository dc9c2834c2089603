"""Renderers: JSON documents, human text, journald, textfile metrics."""
