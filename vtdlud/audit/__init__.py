"""evaluate(snapshot, policy, ledger) -> Report (pure), the findings catalog, the gate."""
