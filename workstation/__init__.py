"""The top floor: the offline demo, its HTML page and the one command line over every package."""
