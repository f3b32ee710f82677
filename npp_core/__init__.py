"""NPP Driver Explorer: net primary productivity of a mining area and what controls it.

The science lives in one module per concept — :mod:`estarfm` (NDVI fusion),
:mod:`casa` (NPP), :mod:`kriging` and :mod:`ahp` (soil and mining drivers),
:mod:`drivers` (driver layers on the grid), :mod:`lcc` (local correlation),
:mod:`attribution` (random-forest importance and factorial contributions) — and
:mod:`pipeline` runs them in order over a dataset (:mod:`dataset`) with a
content-hash cache (:mod:`cache`). No module imports Streamlit.
"""
__version__ = "0.1.0"
