"""Benchmarks (``python -m ffdv_utils bench extraction|embeddings|train|scale``); nothing else imports them.
"""
