"""Trustworthy models: explanations (attributions), bias audits and mitigation, differentially
private and federated training, synthetic data."""
