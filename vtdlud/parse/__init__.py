"""Parsers: text and blobs from the host into the model; they raise ParseError and nothing else."""
