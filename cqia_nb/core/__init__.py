"""Building blocks every stage shares, each defined once: the chat turn and templates, the generation
loop, intervals, hashing, text normalisation, the KV store, append-only logs, overrides, paths.

``cqia_nb.core`` imports nothing else of the package (a test checks it), so any stage may use it.
"""
