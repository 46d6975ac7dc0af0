"""The thirteen claims of the tour, one ``@claim`` function each (see ``attnlab.lab.tour``)."""

from . import expectation, images, sequences, structure, text  # noqa: F401  (registers the claims)
