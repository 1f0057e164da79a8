"""Wire contracts shared by clients, stand-ins and devices: no I/O, imports only the base modules."""
