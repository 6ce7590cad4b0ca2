"""WSGI entry point: ``gunicorn wsgi:app`` (settings from GOVSVC_* environment variables)."""

import gc

from govsvc import create_app

app = create_app()
# Everything loaded so far (modules, the PII models, policy files) lives as long as the process: keep it out of
# the cyclic garbage collector's generations, so that collections during requests stay short.
gc.collect()
gc.freeze()
