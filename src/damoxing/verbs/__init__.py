"""One module per CLI verb (train, evaluate, predict, ...): the only place where stages are wired
together. `damoxing.api` and `damoxing.cli` are thin layers over these."""
