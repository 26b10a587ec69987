"""Use-cases that tie the database, storage and authorization together.

Services take an open SQLAlchemy session and a :class:`~satchel.services.authz.Principal`, and
return plain dataclasses; they never see HTTP. Routes and the CLI call them.
"""
