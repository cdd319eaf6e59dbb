"""The central vetting-queue service (FastAPI on uvicorn, SQLite and files)."""
