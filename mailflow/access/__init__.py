"""Access to organisations: people asking to answer for another
organisation, its administrators deciding by link or by reply, and
administrators managing their organisation's people (by email lines, a
page, and a periodic review), each committed with a second factor."""
