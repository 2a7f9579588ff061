"""The prediction log and job records: SQLAlchemy models, Alembic migrations, writers."""
