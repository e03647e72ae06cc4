"""Local feature extractors (one module per method) and the sharded feature store they write."""
