"""`reconcile watch`: the agent that keeps a host equal to a directory of stack files."""
