"""What people see: progress, the summary, status, export, the HTML report, review, logs.

Owns the live counts of a run (the tally), the panel and progress lines, the
summary text and JSON, the status and export of the ledger, the report and
its thumbnails, the local review page, and logging with redaction of secrets.

Never changes a task's state and never sends a request: views only read, but
for the review page, which records a person's decisions through ledger/reviews.
"""
