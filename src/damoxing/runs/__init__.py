"""The run folder, the hub of the lifecycle: writing one atomically, reading it back as a model
(predictor), its manifest, and listing and tracking runs."""
