"""The data layer: read a source into `RawData` (sources/, one module per file family), choose the
data kind the model reads it as and let that kind prepare it (kinds/: table, image, text, corpus,
sequence), with the target steps written once (targets.py), the rows split into train/val/test
(split.py) and everything fitted on the training split only, saved as JSON. `prepare_data`
(pipeline.py) is the entry point. Nothing here imports torch or the models: what the model needs
arrives as a `ModelNeeds` (schema.py)."""
