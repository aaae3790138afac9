"""The data layer: read a source into `RawData` (sources.py, builtin.py), split it into
train/val/test indices (split.py) and fit preprocessing on the training split only
(preprocess.py, saved as JSON). Nothing here imports torch."""
