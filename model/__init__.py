"""Model side of counsel-bot: prompt format, wire schema, generation engine and the inference worker.

Importing `model` or `model.schema` / `model.prompt` does not import torch; only `model.engine` and what
loads weights do.
"""
