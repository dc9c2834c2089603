"""evaluate(snapshot, policy) -> Report, and the findings catalog."""
