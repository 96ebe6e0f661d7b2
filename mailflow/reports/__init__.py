"""Reports for the auditors: the figures of each alert and the table of
its organisations, computed in the database and shared by every way of
reading them (the command line now; the digest and the page later)."""
