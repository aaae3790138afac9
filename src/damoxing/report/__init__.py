"""The HTML model card of a run (html.py) and its plots (plots.py)."""
