"""The offline ``check``: the old job run over an exported file instead of MongoDB.

``extjson`` reads and writes documents (plain or MongoDB Extended JSON) losslessly,
``formats`` reads the input file (JSON array or newline-delimited JSON) and writes the output
atomically in the same format, ``logspill`` keeps check-log entries sorted in constant
memory, and ``check`` runs the whole thing. See docs/offline-check.md.
"""
