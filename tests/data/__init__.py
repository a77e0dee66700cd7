"""Tests of the bundled data and its recipe (``data/``)."""
