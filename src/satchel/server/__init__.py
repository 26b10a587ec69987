"""HTTP server: create_app(settings) builds the FastAPI application."""
