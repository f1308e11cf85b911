"""What people see: progress, the summary, status, export, the HTML report, logs.

Owns the live counts of a run (the tally), the panel and progress lines, the
summary text and JSON, the status and export of the ledger, the report and
its thumbnails, and logging with redaction of secrets.

Never changes a task's state and never sends a request: views only read.
"""
