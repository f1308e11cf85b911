"""Configuration: providers, settings and the model catalog, with the YAML defaults.

Owns `providers.yaml`, `models.yaml` and `defaults.yaml` (package data, also
reachable as ./config), resolving the key and base URL from the environment,
and what each model takes and costs; and the one rule (`redact.clean`) by which
any text from outside is cut, stripped of control characters and redacted before
it is stored or printed.

Never imports anything of the pipeline above the shared vocabulary (task,
errors), and never prints or stores the key: it lives in a `Secret`.
"""
