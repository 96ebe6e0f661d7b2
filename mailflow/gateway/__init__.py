"""The mail gateway's routing: a stored inbound message goes to the handler
of the address it came to (a bounce address, a reply address, a service
address) and, for a reply address, to the handler of what its key belongs
to, after the checks every reply must pass."""
