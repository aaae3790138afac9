"""Making a trained model better or cheaper: hyperparameter search (tune), compression
(quantization, pruning) and distillation. Each reads run folders and writes new ones."""
