//! Standard Webhooks signatures: to be written.
