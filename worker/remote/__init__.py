"""What a GPU host runs instead of the database-backed tasks: the job protocol's client (client) and the
Celery worker that uses it (host). Neither imports SQLAlchemy, app.db or app.tables."""
