"""Load, observe, plan, apply: the loop every verb is built from."""
