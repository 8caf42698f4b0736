"""Software protections a person applies after an image (or a template) exists, judged by the same attackers as the optic."""
