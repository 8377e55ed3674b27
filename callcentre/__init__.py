"""callcentre: settings, database, domain events and wiring of the call-centre platform."""

__version__ = "0.1.0"
