"""schemathesis hooks for lipachat-relay, loaded by scripts/schemathesis.sh.

Two properties of the API that its JSON Schema cannot state, applied to generated *positive*
cases only (a negative case's violation must reach the relay intact):

1. `messageId` is the deduplication key across every send path (SPEC "Deduplication"): a
   generated id that an earlier case used with another payload is a 422 by design. Each
   positive case gets a fresh UUID, so any other 4xx for schema-valid data is a real mismatch.
2. An interactive list has at most 10 rows across all its sections together (Lipachat's
   "Sending Interactive Lists"); the schema can only bound each section to 10. Rows past the
   tenth are dropped, which keeps the case schema-valid (no section has a minimum).
"""

import uuid

import schemathesis
from schemathesis import GenerationMode

LIST_PATHS = {"/interactive/list", "/api/v1/whatsapp/interactive/list"}
MAX_LIST_ROWS = 10


@schemathesis.hook
def map_case(context, case):
    """Fuzzing and coverage cases."""
    meta = case.meta
    if meta is not None and meta.generation.mode == GenerationMode.POSITIVE:
        fit(case)
    return case


@schemathesis.hook
def before_add_examples(context, examples):
    """Cases built from the schema's examples (all schema-valid); map_case does not see them."""
    for case in examples:
        fit(case)


def fit(case):
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("messageId"), str):
        body["messageId"] = str(uuid.uuid4())
    if case.operation.path in LIST_PATHS and isinstance(body.get("buttons"), list):
        left = MAX_LIST_ROWS
        for section in body["buttons"]:
            rows = section.get("sectionItems") if isinstance(section, dict) else None
            if isinstance(rows, list):
                del rows[left:]
                left -= len(rows)
