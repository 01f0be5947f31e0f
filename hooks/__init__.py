"""Integrations that run gradshield-lint where the data lives.

- `hooks.webhook_app`: a Hugging Face Hub webhook app (pure ASGI, no web framework needed) that checks the rows a
  dataset pull request adds and keeps the dataset card's report up to date on `main`. See `hooks/README.md`.
- `hooks.payload`: parsing and triage of Hub webhook payloads (no network, no model).
- `hooks.jobs`: what the app does for a pull request or a push to `main` (Hub calls + the linter).
- `hooks.asgi_server`: a small standard-library HTTP server that serves an ASGI app, for hosts without uvicorn
  and for the tests.
"""
