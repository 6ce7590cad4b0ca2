"""WSGI entry point: ``gunicorn wsgi:app`` (settings from GOVSVC_* environment variables)."""

from govsvc import create_app, settle_heap

app = create_app()
settle_heap()
