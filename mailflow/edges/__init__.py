"""The processes at the edge: the inbound SMTP/LMTP server, the IMAP
poller (and, later, the web page).  Each is thin: it moves bytes between
the network and the domain's functions."""
