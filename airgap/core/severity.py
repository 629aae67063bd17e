"""The severities a policy rule may have, highest first: one spelling for the policy engine and
for the signed manifest's policy summary (which must not import the engine to check one)."""

SEVERITIES = ("high", "medium", "low")
