"""Attackers of a capture method: recognisers and reconstructions that know everything but the person."""
