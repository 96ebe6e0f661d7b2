"""The page machinery every capability's pages build on: the one commit
flow, refusals, rendering, CSRF and sessions."""
