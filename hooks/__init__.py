"""Integrations that run gradshield-lint where the data lives.

- `hooks.webhook_app`: a Hugging Face Hub webhook app (an ASGI app served by uvicorn, no web framework) that checks
  the rows a dataset pull request adds and keeps the dataset card's report up to date on `main`. See
  `hooks/README.md`; install with the `webhook` extra (`pip install "gradshield-lint[webhook]"`).
- `hooks.payload`: parsing (`huggingface_hub`'s webhook payload models) and triage of Hub webhook payloads (no
  network, no model).
- `hooks.jobs`: what the app does for a pull request or a push to `main` (Hub calls + the linter).
"""
