"""Webhook ingestion: acknowledge on durable receipt, apply right after (DESIGN.md).

`receipt` verifies, reads and records each delivery as one event, answering the provider once it
is durable; `applier` consumes received deliveries from the log in order, exactly once, and applies
each to its payment or withdrawal (`application`), found through `subject_index`, or holds it as
unmatched (`unmatched`) until its subject appears.
"""
