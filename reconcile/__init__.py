"""reconcile: a declarative reconciler for Linux hosts."""
