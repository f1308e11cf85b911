"""The ways one edit travels to the gateway, one module per route.

Owns, per route, building the request and reading the answer; the rest of the pipeline
does not know which route a task took beyond its name: `images` (multipart
`POST /images/edits`), `chat`, `gemini`, and `batch` (JSONL lines for the Batch API),
with what they share in `base`.

Never retries and never writes: a route turns one answer into images or an error.
"""
