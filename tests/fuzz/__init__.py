"""Bad input: generated and hand-written messages against the edge parser and the consumer."""
