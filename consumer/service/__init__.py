"""The imperative shell: consume, read-modify-write, publish, commit."""
