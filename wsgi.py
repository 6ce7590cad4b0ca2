"""WSGI entry point: ``gunicorn wsgi:app`` (settings from GOVSVC_* environment variables)."""

import gc

from govsvc import create_app, warm_up

app = create_app()
warm_up(app)  # the policy and taxonomy parsed now, not by the first requests
# Everything loaded so far (modules, the PII models, policy, taxonomy) lives as long as the process: keep it out
# of the cyclic garbage collector's generations, so that collections during requests stay short.
gc.collect()
gc.freeze()
