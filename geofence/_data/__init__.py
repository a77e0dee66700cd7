"""Bundled data: the default snapshot (``default.gfs``), its licences and notices."""
