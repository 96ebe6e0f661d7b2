"""Reading the files people hand to the command line (organisation lists,
alert definitions) into plain values the domain accepts.  Nothing here
touches the database."""
