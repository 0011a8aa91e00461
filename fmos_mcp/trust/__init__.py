"""The trust plane: privilege classes, policies, detectors, approvals, judges and the audit chain."""
